//! Tests of `edgellm plan`.
