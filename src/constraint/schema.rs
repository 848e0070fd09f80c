//! JSON schemas checked before anything compiles them: contradictory or impossible bounds, sizes
//! that would make a constraint explode, remote references and malformed keywords are a
//! [`SchemaError`] naming the JSON path of the keyword. The walk is iterative, so a deep schema
//! cannot overflow the stack; depth and size are bounded by [`SchemaLimits`].

use serde_json::{Map, Value};

/// Bounds on a schema; over any of them is a [`SchemaError`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaLimits {
    /// Nesting of subschemas.
    pub max_depth: usize,
    /// Subschemas in all.
    pub max_nodes: usize,
    /// The largest `minLength` / `maxLength`.
    pub max_length: u64,
    /// The largest `minItems` / `maxItems` / `minProperties` / `maxProperties` / `*Contains`.
    pub max_items: u64,
    /// The longest `pattern`, in bytes.
    pub max_pattern_bytes: usize,
    /// Values in one `enum`.
    pub max_enum: usize,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_depth: 32,
            max_nodes: 4096,
            max_length: 4096,
            max_items: 256,
            max_pattern_bytes: 1024,
            max_enum: 4096,
        }
    }
}

/// What is wrong with a schema, and where (`path` is a JSON pointer into the schema).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", if .path.is_empty() { String::new() } else { format!("at {}: ", .path) })]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

/// Keywords whose value is one subschema.
const ONE: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
];
/// Keywords whose value is an array of subschemas.
const MANY: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems", "items"];
/// Keywords whose value is an object of subschemas.
const MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// Checks `schema` and every subschema in it.
pub fn check(schema: &Value, limits: &SchemaLimits) -> Result<(), SchemaError> {
    let mut stack = vec![(schema, String::new(), 0usize)];
    let mut nodes = 0usize;
    while let Some((node, path, depth)) = stack.pop() {
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(error(
                "",
                format!("the schema has more than {} subschemas", limits.max_nodes),
            ));
        }
        if depth > limits.max_depth {
            return Err(error(
                &path,
                format!("subschemas are nested deeper than {}", limits.max_depth),
            ));
        }
        let object = match node {
            Value::Bool(_) => continue,
            Value::Object(object) => object,
            _ => return Err(error(&path, "a schema must be an object or a boolean")),
        };
        check_keywords(object, &path, limits)?;
        for (key, value) in object {
            let here = format!("{path}/{}", escape(key));
            if MAP.contains(&key.as_str()) {
                let Value::Object(map) = value else {
                    return Err(error(
                        &here,
                        format!("`{key}` must be an object of schemas"),
                    ));
                };
                for (name, sub) in map {
                    stack.push((sub, format!("{here}/{}", escape(name)), depth + 1));
                }
            } else if let (true, Value::Array(items)) = (MANY.contains(&key.as_str()), value) {
                if key != "items" && items.is_empty() {
                    return Err(error(&here, format!("`{key}` must not be empty")));
                }
                for (i, sub) in items.iter().enumerate() {
                    stack.push((sub, format!("{here}/{i}"), depth + 1));
                }
            } else if ONE.contains(&key.as_str()) {
                stack.push((value, here, depth + 1));
            } else if MANY.contains(&key.as_str()) {
                return Err(error(&here, format!("`{key}` must be an array of schemas")));
            }
        }
    }
    Ok(())
}

/// The largest magnitude a JSON `number` may take in constrained output: every number the
/// constraint lets through is then one an f64 (serde_json, JavaScript, Python) can hold. Without
/// it, `71E520` is valid JSON that no parser can represent.
pub const MAX_NUMBER: f64 = 1e15;

/// The schema handed to the constraint compiler: every `number` without bounds gets
/// `±MAX_NUMBER`; an object that lists `properties` and says nothing of
/// `additionalProperties` generates only those; every other place that admits any JSON value
/// (`additionalProperties: true`, a missing or `true` `items`, a `{}` or `true` subschema)
/// admits only JSON whose numbers are bounded too. Output stays within what the schema allows. Call after [`check`] (which bounds the depth this recursion
/// follows).
pub fn with_representable_numbers(mut schema: Value) -> Value {
    if schema.as_bool() == Some(true) {
        return any_object_or_value(false);
    }
    bound_numbers(&mut schema);
    if let Value::Object(root) = &mut schema {
        let defs = root
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(defs) = defs {
            defs.insert(ANY.into(), any_value());
        }
    }
    schema
}

/// The definition every "any JSON" position refers to.
const ANY: &str = "edgellm_any_value";
const ANY_REF: &str = "#/$defs/edgellm_any_value";

fn any_ref() -> Value {
    serde_json::json!({"$ref": ANY_REF})
}

fn any_value() -> Value {
    serde_json::json!({"anyOf": [
        {"type": "null"}, {"type": "boolean"}, {"type": "string"},
        {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
        {"type": "array", "items": {"$ref": ANY_REF}},
        {"type": "object", "additionalProperties": {"$ref": ANY_REF}},
    ]})
}

fn is_any(node: &Value) -> bool {
    node.as_bool() == Some(true) || node.as_object().is_some_and(Map::is_empty)
}

fn bound_numbers(node: &mut Value) {
    let Value::Object(object) = node else { return };
    let types: Vec<&str> = match object.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let (number, is_object, is_array) = (
        types.contains(&"number"),
        types.contains(&"object") || object.contains_key("properties"),
        types.contains(&"array"),
    );
    if number {
        if !object.contains_key("minimum") && !object.contains_key("exclusiveMinimum") {
            object.insert("minimum".into(), (-MAX_NUMBER).into());
        }
        if !object.contains_key("maximum") && !object.contains_key("exclusiveMaximum") {
            object.insert("maximum".into(), MAX_NUMBER.into());
        }
    }
    let open = |object: &Map<String, Value>, key: &str| object.get(key).is_none_or(is_any);
    if is_object && !object.contains_key("patternProperties") {
        match object.get("additionalProperties") {
            // As llama.cpp's converter generates: an object that lists its properties gets
            // only those, unless it says otherwise (the output still validates: it is a
            // subset of what the schema allows); the model does not invent fields.
            None if object.contains_key("properties") => {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            _ if open(object, "additionalProperties") => {
                object.insert("additionalProperties".into(), any_ref());
            }
            _ => {}
        }
    }
    if is_array && !object.contains_key("prefixItems") && open(object, "items") {
        object.insert("items".into(), any_ref());
    }
    for (key, value) in object.iter_mut() {
        let key = key.as_str();
        if MAP.contains(&key) {
            if let Value::Object(map) = value {
                map.values_mut().for_each(bound_or_replace);
            }
        } else if MANY.contains(&key) && value.is_array() {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(bound_or_replace);
            }
        } else if ONE.contains(&key) && !matches!(key, "not" | "if" | "propertyNames") {
            bound_or_replace(value);
        }
    }
}

fn bound_or_replace(node: &mut Value) {
    if is_any(node) {
        *node = any_ref();
    } else {
        bound_numbers(node);
    }
}

/// "Any JSON object" (`json_object`) as a schema whose numbers are representable.
pub fn any_object() -> Value {
    any_object_or_value(true)
}

fn any_object_or_value(object: bool) -> Value {
    let mut schema = if object {
        serde_json::json!({"type": "object", "additionalProperties": {"$ref": ANY_REF}})
    } else {
        any_ref()
    };
    schema["$defs"] = serde_json::json!({ ANY: any_value() });
    schema
}

fn error(path: &str, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A JSON pointer segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn check_keywords(
    object: &Map<String, Value>,
    path: &str,
    limits: &SchemaLimits,
) -> Result<(), SchemaError> {
    let at = |key: &str| format!("{path}/{}", escape(key));
    if let Some(kind) = object.get("type") {
        let names: Vec<&Value> = match kind {
            Value::Array(names) if !names.is_empty() => names.iter().collect(),
            Value::String(_) => vec![kind],
            _ => {
                return Err(error(
                    &at("type"),
                    "`type` must be a type name or a non-empty array of them",
                ));
            }
        };
        for name in names {
            if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                return Err(error(&at("type"), format!("unknown type {name}")));
            }
        }
    }
    let count = |key: &str, max: u64| -> Result<Option<u64>, SchemaError> {
        match object.get(key) {
            None => Ok(None),
            Some(value) => {
                let n = value.as_u64().or_else(|| {
                    value
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                });
                match n {
                    None => Err(error(
                        &at(key),
                        format!("`{key}` must be a non-negative integer"),
                    )),
                    Some(n) if n > max => Err(error(
                        &at(key),
                        format!("`{key}` is {n}, more than the limit of {max}"),
                    )),
                    Some(n) => Ok(Some(n)),
                }
            }
        }
    };
    for (low, high, max) in [
        ("minLength", "maxLength", limits.max_length),
        ("minItems", "maxItems", limits.max_items),
        ("minProperties", "maxProperties", limits.max_items),
        ("minContains", "maxContains", limits.max_items),
    ] {
        let min = count(low, max)?;
        let most = match object.get(high) {
            // A large maximum only widens: it is not refused, just read as "no more than the limit".
            Some(value) if value.as_u64().is_some_and(|n| n > max) => Some(max),
            _ => count(high, max)?,
        };
        if let (Some(min), Some(most)) = (min, most)
            && min > most
        {
            return Err(error(
                &at(low),
                format!("`{low}` {min} is greater than `{high}` {most}: no value can match"),
            ));
        }
    }
    let number = |key: &str| -> Result<Option<f64>, SchemaError> {
        match object.get(key) {
            None | Some(Value::Bool(_)) if key.starts_with("exclusive") => Ok(None),
            None => Ok(None),
            Some(value) => value
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| error(&at(key), format!("`{key}` must be a number"))),
        }
    };
    let minimum = number("minimum")?;
    let maximum = number("maximum")?;
    let exclusive_minimum = number("exclusiveMinimum")?;
    let exclusive_maximum = number("exclusiveMaximum")?;
    let contradiction = |low: &str, high: &str| {
        Err(error(
            &at(low),
            format!("`{low}` and `{high}` leave no number that can match"),
        ))
    };
    if let (Some(low), Some(high)) = (minimum, maximum)
        && low > high
    {
        return contradiction("minimum", "maximum");
    }
    if let (Some(low), Some(high)) = (exclusive_minimum, exclusive_maximum)
        && low >= high
    {
        return contradiction("exclusiveMinimum", "exclusiveMaximum");
    }
    if let (Some(low), Some(high)) = (minimum, exclusive_maximum)
        && low >= high
    {
        return contradiction("minimum", "exclusiveMaximum");
    }
    if let (Some(low), Some(high)) = (exclusive_minimum, maximum)
        && low >= high
    {
        return contradiction("exclusiveMinimum", "maximum");
    }
    let integer = object.get("type").and_then(Value::as_str) == Some("integer");
    if integer {
        let low = match (minimum, exclusive_minimum) {
            (Some(m), Some(e)) => Some(m.ceil().max(e.floor() + 1.0)),
            (Some(m), None) => Some(m.ceil()),
            (None, Some(e)) => Some(e.floor() + 1.0),
            (None, None) => None,
        };
        let high = match (maximum, exclusive_maximum) {
            (Some(m), Some(e)) => Some(m.floor().min(e.ceil() - 1.0)),
            (Some(m), None) => Some(m.floor()),
            (None, Some(e)) => Some(e.ceil() - 1.0),
            (None, None) => None,
        };
        if let (Some(low), Some(high)) = (low, high)
            && low > high
        {
            return Err(error(path, "the bounds leave no integer that can match"));
        }
    }
    if let Some(step) = object.get("multipleOf")
        && !step.as_f64().is_some_and(|f| f.is_finite() && f > 0.0)
    {
        return Err(error(
            &at("multipleOf"),
            "`multipleOf` must be a number greater than 0",
        ));
    }
    if let Some(values) = object.get("enum") {
        match values {
            Value::Array(values) if values.is_empty() => {
                return Err(error(&at("enum"), "`enum` is empty: no value can match"));
            }
            Value::Array(values) if values.len() > limits.max_enum => {
                return Err(error(
                    &at("enum"),
                    format!("`enum` has more than {} values", limits.max_enum),
                ));
            }
            Value::Array(_) => {}
            _ => return Err(error(&at("enum"), "`enum` must be an array")),
        }
    }
    if let Some(pattern) = object.get("pattern") {
        match pattern.as_str() {
            Some(p) if p.len() > limits.max_pattern_bytes => {
                return Err(error(
                    &at("pattern"),
                    format!(
                        "`pattern` is longer than {} bytes",
                        limits.max_pattern_bytes
                    ),
                ));
            }
            Some(_) => {}
            None => return Err(error(&at("pattern"), "`pattern` must be a string")),
        }
    }
    if let Some(required) = object.get("required")
        && !required
            .as_array()
            .is_some_and(|names| names.iter().all(Value::is_string))
    {
        return Err(error(
            &at("required"),
            "`required` must be an array of property names",
        ));
    }
    if let Some(reference) = object.get("$ref") {
        match reference.as_str() {
            Some(r) if r.starts_with('#') => {}
            Some(r) => {
                return Err(error(
                    &at("$ref"),
                    format!("only references inside the schema (`#...`) are allowed, not {r:?}"),
                ));
            }
            None => return Err(error(&at("$ref"), "`$ref` must be a string")),
        }
    }
    if let (Some(Value::Array(required)), Some(Value::Bool(false)), Some(Value::Object(props))) = (
        object.get("required"),
        object.get("additionalProperties"),
        object.get("properties"),
    ) {
        for name in required.iter().filter_map(Value::as_str) {
            if !props.contains_key(name) {
                return Err(error(
                    &at("required"),
                    format!("`{name}` is required but not allowed (additionalProperties is false)"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(schema: Value) -> String {
        match check(&schema, &SchemaLimits::default()) {
            Ok(()) => panic!("accepted {schema}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn refuses_contradictions_naming_the_keyword() {
        let cases = [
            (
                json!({"type": "integer", "minimum": 5, "maximum": 1}),
                "at /minimum: `minimum` and `maximum`",
            ),
            (
                json!({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 3}),
                "exclusiveMinimum",
            ),
            (
                json!({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4}),
                "no integer",
            ),
            (
                json!({"type": "integer", "minimum": 1.2, "maximum": 1.8}),
                "no integer",
            ),
            (
                json!({"type": "string", "minLength": 3, "maxLength": 2}),
                "at /minLength",
            ),
            (
                json!({"type": "array", "minItems": 4, "maxItems": 2}),
                "minItems",
            ),
            (
                json!({"type": "object", "minProperties": 2, "maxProperties": 1}),
                "minProperties",
            ),
            (
                json!({"properties": {"a": {"properties": {"b": {"type": "string", "minLength": 9, "maxLength": 1}}}}}),
                "at /properties/a/properties/b/minLength",
            ),
            (
                json!({"anyOf": [{"type": "number", "minimum": 2, "maximum": 1}]}),
                "at /anyOf/0/minimum",
            ),
            (json!({"enum": []}), "empty"),
            (json!({"type": "strin"}), "unknown type"),
            (json!({"minLength": -1}), "non-negative"),
            (json!({"minLength": 1000000}), "limit"),
            (json!({"type": "array", "minItems": 100000}), "limit"),
            (json!({"multipleOf": 0}), "greater than 0"),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "only references inside",
            ),
            (json!({"anyOf": []}), "must not be empty"),
            (json!({"properties": 3}), "object of schemas"),
            (json!({"items": 3}), "object or a boolean"),
            (
                json!({"type": "object", "properties": {}, "required": ["x"], "additionalProperties": false}),
                "required but not allowed",
            ),
            (json!({"pattern": "a".repeat(2000)}), "longer than"),
        ];
        for (schema, fragment) in cases {
            let message = refused(schema.clone());
            assert!(message.contains(fragment), "{schema}: {message}");
        }
    }

    #[test]
    fn accepts_ordinary_schemas() {
        for schema in [
            json!({"type": "object", "properties": {"severity": {"enum": ["low", "high"]}}, "required": ["severity"]}),
            json!({"type": "integer", "minimum": 1, "maximum": 1}),
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
            json!({"type": "string", "maxLength": 100000000}),
            json!({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}),
            json!({"items": [{"type": "string"}], "exclusiveMinimum": true}),
            json!(true),
        ] {
            assert_eq!(check(&schema, &SchemaLimits::default()), Ok(()), "{schema}");
        }
    }

    #[test]
    fn depth_and_size_are_bounded_without_recursion() {
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(refused(deep).contains("nested deeper than 32"));
        let wide: Map<String, Value> = (0..5000)
            .map(|i| (format!("p{i}"), json!({"type": "string"})))
            .collect();
        assert!(refused(json!({"properties": wide})).contains("more than 4096 subschemas"));
    }
}
