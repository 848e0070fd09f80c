//! Prometheus remote-write 1.0 on the wire: the protobuf messages of `prometheus/prompb`
//! (`WriteRequest`, `TimeSeries`, `Label`, `Sample`; metadata and exemplars are not sent), encoded
//! with prost and compressed with snappy's block format, as the specification requires.
//!
//! [`merge`] joins buffered scrapes into one request with one `TimeSeries` per label set and its
//! samples in time order: the labels of a series travel once per request, not once per scrape,
//! which is most of what a request weighs (docs/telemetry.md).

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

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
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

/// Joins compressed bodies (scrapes, oldest first) into one compressed body: every series once,
/// with the samples of all the bodies in time order. `Err(i)`: body `i` is not a request.
pub fn merge(bodies: &[Vec<u8>]) -> Result<Vec<u8>, usize> {
    if let [one] = bodies {
        return decompress(one).map(|_| one.clone()).map_err(|_| 0);
    }
    let mut order: Vec<TimeSeries> = Vec::new();
    let mut index: std::collections::HashMap<Vec<Label>, usize> = std::collections::HashMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let request = decompress(body).map_err(|_| i)?;
        for series in request.timeseries {
            match index.get(&series.labels) {
                Some(&at) => order[at].samples.extend(series.samples),
                None => {
                    index.insert(series.labels.clone(), order.len());
                    order.push(series);
                }
            }
        }
    }
    for series in &mut order {
        // Stable: two samples at one time keep their order (a receiver refuses the second).
        series.samples.sort_by_key(|s| s.timestamp);
        series.samples.dedup_by_key(|s| s.timestamp);
    }
    Ok(compress(&WriteRequest { timeseries: order }))
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
    fn round_trips_and_merges_one_series_per_label_set() {
        let a = WriteRequest {
            timeseries: vec![series("a", 1.0, 10), series("b", 1.5, 10)],
        };
        let b = WriteRequest {
            timeseries: vec![series("b", 2.5, 20), series("c", f64::NAN, 30)],
        };
        assert_eq!(decompress(&compress(&a)).unwrap(), a);
        let merged = decompress(&merge(&[compress(&a), compress(&b)]).unwrap()).unwrap();
        assert_eq!(merged.timeseries.len(), 3);
        assert_eq!(merged.timeseries[0], a.timeseries[0]);
        let b_series = &merged.timeseries[1];
        assert_eq!(b_series.labels, a.timeseries[1].labels);
        let times: Vec<i64> = b_series.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [10, 20]);
        assert!(merged.timeseries[2].samples[0].value.is_nan());
        assert_eq!(merge(&[compress(&a), b"not snappy".to_vec()]), Err(1));
        assert_eq!(merge(&[b"x".to_vec()]), Err(0));
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
