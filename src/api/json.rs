//! `ApiJson<T>`: the JSON body extractor whose rejections are [`ApiError`]s naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request_error",
                        "request body is larger than the server's limit",
                    )
                    .with_code("request_too_large")
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        rejection.body_text(),
                    )
                }
            })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body; a type error names the field it is in (`param`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => match deserializer.end() {
            Ok(()) => Ok(value),
            // `{"prompt":"hi"}x`, a trailing NUL: not one JSON value.
            Err(error) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!("malformed JSON body: {error}"),
            )),
        },
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    format!("malformed JSON body: {inner}"),
                ));
            }
            let param = if path == "." { String::new() } else { path };
            let message = if param.is_empty() {
                format!("invalid request: {inner}")
            } else {
                format!("invalid '{param}': {inner}")
            };
            Err(ApiError {
                param: (!param.is_empty()).then_some(param),
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
            })
        }
    }
}
