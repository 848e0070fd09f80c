//! The text inside JSON schemas that leaves with a request (`response_format` schemas and tool
//! `parameters`): every literal a person wrote is redacted, the structure is left as it is.
//!
//! What is scanned: `description`, `title`, `$comment` and any other keyword with a string value,
//! every string inside `enum`, `const`, `default` and `examples` (instance data, however deep), and
//! `pattern` (which must still compile as a regex afterwards, or nothing leaves). What is left
//! alone: object keys (property names are structure, and `required` names them), and the
//! keywords whose strings are structure (`type`, `format`, `$ref`, `required`, ...).

use serde_json::Value;

/// Keywords whose string values are structure, never text a person wrote.
const STRUCTURAL: &[&str] = &[
    "type",
    "format",
    "$ref",
    "$schema",
    "$id",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "required",
    "dependentRequired",
    "contentEncoding",
    "contentMediaType",
];

/// Keywords whose values are instance data: every string in them is text.
const DATA: &[&str] = &["enum", "const", "default", "examples"];

/// Keywords whose values map names (structure) to subschemas.
const NAMED_SUBSCHEMAS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Why a schema could not be redacted.
#[derive(Debug)]
pub enum SchemaError<E> {
    /// The redaction itself refused.
    Refused(E),
    /// A `pattern` held a detected value and is no longer a regex without it.
    Pattern,
}

/// Redacts every literal of `schema` in place with `f`.
pub fn redact_schema<E>(
    schema: &mut Value,
    f: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<(), SchemaError<E>> {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.as_str();
                if STRUCTURAL.contains(&key) {
                    continue;
                }
                if DATA.contains(&key) {
                    redact_data(value, f).map_err(SchemaError::Refused)?;
                } else if NAMED_SUBSCHEMAS.contains(&key) {
                    if let Value::Object(named) = value {
                        for sub in named.values_mut() {
                            redact_schema(sub, f)?;
                        }
                    }
                } else if key == "pattern" {
                    if let Value::String(pattern) = value {
                        let redacted = f(pattern).map_err(SchemaError::Refused)?;
                        if redacted != *pattern && regex::Regex::new(&redacted).is_err() {
                            return Err(SchemaError::Pattern);
                        }
                        *pattern = redacted;
                    }
                } else {
                    redact_schema(value, f)?;
                }
            }
        }
        // A list of subschemas (`anyOf`, `prefixItems`) or of texts under an unknown keyword.
        Value::Array(items) => {
            for item in items {
                redact_schema(item, f)?;
            }
        }
        Value::String(text) => *text = f(text).map_err(SchemaError::Refused)?,
        _ => {}
    }
    Ok(())
}

/// Every string in `value`, keys left alone.
fn redact_data<E>(
    value: &mut Value,
    f: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<(), E> {
    match value {
        Value::String(text) => *text = f(text)?,
        Value::Array(items) => {
            for item in items {
                redact_data(item, f)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                redact_data(item, f)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mark(text: &str) -> Result<String, ()> {
        Ok(text.replace("secret", "<S_1>"))
    }

    #[test]
    fn literals_are_redacted_and_structure_is_not() {
        let mut schema = json!({
            "type": "object",
            "title": "secret form",
            "description": "send to secret",
            "properties": {
                "secret": {"type": "string", "enum": ["a secret", "b"], "default": {"type": "secret"}},
                "other": {"anyOf": [{"const": "secret"}, {"type": "string", "pattern": "^secret$"}],
                          "examples": [["secret"]], "format": "secret"}
            },
            "required": ["secret"],
            "$defs": {"secret": {"description": "secret"}}
        });
        redact_schema(&mut schema, &mut mark).unwrap();
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "title": "<S_1> form",
                "description": "send to <S_1>",
                "properties": {
                    "secret": {"type": "string", "enum": ["a <S_1>", "b"], "default": {"type": "<S_1>"}},
                    "other": {"anyOf": [{"const": "<S_1>"}, {"type": "string", "pattern": "^<S_1>$"}],
                              "examples": [["<S_1>"]], "format": "secret"}
                },
                "required": ["secret"],
                "$defs": {"secret": {"description": "<S_1>"}}
            })
        );
    }

    #[test]
    fn a_pattern_that_redaction_would_break_refuses() {
        let mut schema = json!({"type": "string", "pattern": "^(secret)$"});
        let mut cut = |t: &str| -> Result<String, ()> { Ok(t.replace("(secret", "<S_1>")) };
        assert!(matches!(
            redact_schema(&mut schema, &mut cut),
            Err(SchemaError::Pattern)
        ));
        let mut refuse = |_: &str| -> Result<String, &str> { Err("no") };
        let mut schema = json!({"description": "x"});
        assert!(matches!(
            redact_schema(&mut schema, &mut refuse),
            Err(SchemaError::Refused("no"))
        ));
    }
}
