//! Wire formats shared by the server (`api/`), the remote clients (`upstream/`) and the
//! benchmark client (`bench/`), each written once: the OpenAI pieces both sides speak
//! ([`openai`]) and the server-sent-event reader ([`sse`]). Pure: no IO.

pub mod openai;
pub mod sse;
