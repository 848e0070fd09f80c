//! Prometheus remote-write 1.0 on the wire: the protobuf messages of `prometheus/prompb`
//! (`WriteRequest`, `TimeSeries`, `Label`, `Sample`; metadata and exemplars are not sent), encoded
//! with prost and compressed with snappy's block format, as the specification requires.
//!
//! Concatenating two encoded `WriteRequest`s is one valid `WriteRequest` holding both series lists
//! (protobuf merges repeated fields), which is how [`merge`] joins buffered scrapes into one
//! request without decoding them.

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, `__name__` among them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One value at a time in milliseconds since the Unix epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The request body: the protobuf encoding, snappy-compressed (block format).
pub fn compress(request: &WriteRequest) -> Vec<u8> {
    use prost::Message;
    snappy(&request.encode_to_vec())
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    // The block encoder fails only for inputs over ~4 GiB, which a bounded scrape never is.
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

/// Joins compressed bodies into one compressed body holding every series of each, in order.
pub fn merge(bodies: &[Vec<u8>]) -> Result<Vec<u8>, snap::Error> {
    if let [one] = bodies {
        return Ok(one.clone());
    }
    let mut raw = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    for body in bodies {
        raw.extend_from_slice(&decoder.decompress_vec(body)?);
    }
    Ok(snappy(&raw))
}

/// A compressed body read back (what a receiver does; the tests use it).
pub fn decompress(body: &[u8]) -> Result<WriteRequest, String> {
    use prost::Message;
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| e.to_string())?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, value: f64, timestamp: i64) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: vec![Sample { value, timestamp }],
        }
    }

    #[test]
    fn round_trips_and_merges_by_concatenation() {
        let a = WriteRequest {
            timeseries: vec![series("a", 1.0, 10)],
        };
        let b = WriteRequest {
            timeseries: vec![series("b", 2.5, 20), series("c", f64::NAN, 30)],
        };
        assert_eq!(decompress(&compress(&a)).unwrap(), a);
        let merged = decompress(&merge(&[compress(&a), compress(&b)]).unwrap()).unwrap();
        assert_eq!(merged.timeseries.len(), 3);
        assert_eq!(merged.timeseries[0], a.timeseries[0]);
        assert_eq!(merged.timeseries[1], b.timeseries[0]);
        assert!(merged.timeseries[2].samples[0].value.is_nan());
        assert!(merge(&[b"not snappy".to_vec(), compress(&a)]).is_err());
    }

    #[test]
    fn the_wire_bytes_are_prompb_field_numbers() {
        // Label{name:"a", value:"b"} inside TimeSeries field 1 inside WriteRequest field 1.
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "b".into(),
                }],
                samples: vec![],
            }],
        };
        use prost::Message;
        assert_eq!(
            request.encode_to_vec(),
            vec![0x0a, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b']
        );
    }
}
