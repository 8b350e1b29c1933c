use super::fuzz::{corpus, mutate, Mutation};
use super::*;
use crate::codec::{request_decode, DecodeError};
use bytes::Bytes;

/// Every (API key, version) gregor decodes, requests and responses alike.
fn every_version() -> Vec<(ApiKey, i16)> {
    api_keys()
        .flat_map(|key| {
            let versions = key.valid_versions();
            (versions.min..=versions.max).map(move |version| (key, version))
        })
        .collect()
}

#[test]
fn the_18_byte_metadata_request_is_refused_before_any_allocation() {
    // Issue 8: Metadata v1 claiming 2^31-1 topics, which used to abort the broker.
    let frame = Bytes::from_static(b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff\x7f\xff\xff\xff");
    let error = request_decode(frame).unwrap_err();
    let DecodeError::Malformed { reason, .. } = error else {
        panic!("expected a malformed-request error, got {error:?}");
    };
    insta::assert_snapshot!(reason, @"array declares 2147483647 elements at byte 14, but only 0 bytes remain");
}

#[test]
fn huge_compact_arrays_and_element_floods_are_refused() {
    // Metadata v9 (flexible): header v2 with a null client id and no tags, then a compact array
    // whose varint claims 2^32-2 topics.
    let frame = b"\x00\x03\x00\x09\x00\x00\x00\x01\xff\xff\x00\xff\xff\xff\xff\x0f";
    let walked = request_walk(frame, ApiKey::Metadata, 9);
    assert!(
        matches!(
            walked,
            Err(BoundsError::TooLong {
                length: 4294967294,
                ..
            })
        ),
        "{walked:?}"
    );
    // A million and one empty-named topics fit the bytes but exceed the element budget.
    let mut frame = b"\x00\x03\x00\x01\x00\x00\x00\x01\xff\xff".to_vec();
    let topics = REQUEST_ELEMENTS_MAX as i32 + 1;
    frame.extend_from_slice(&topics.to_be_bytes());
    frame.resize(frame.len() + 2 * topics as usize, 0);
    let walked = request_walk(&frame, ApiKey::Metadata, 1);
    assert_eq!(
        walked,
        Err(BoundsError::ElementsExceeded {
            limit: REQUEST_ELEMENTS_MAX
        })
    );
}

#[test]
fn sketched_frames_of_every_api_and_version_decode_as_the_walker_says() {
    // The cross-check that the generated walkers follow the crate: random populated frames of
    // every request and response gregor decodes must be decoded by the crate, consuming
    // exactly the bytes the walker consumed.
    let versions = every_version();
    assert!(
        versions.len() > 150,
        "only {} (key, version) pairs",
        versions.len()
    );
    for (key, version) in versions {
        for seed in 0..40 {
            let (Some(request), Some(response)) = (
                request_sketch(key, version, seed),
                response_sketch(key, version, seed),
            ) else {
                continue; // A version the crate's ApiKey lists but its message type refuses.
            };
            assert_eq!(
                request_cross_check(&request),
                Ok(CrossCheck::Decoded),
                "{key:?} v{version} request, seed {seed}"
            );
            assert_eq!(
                response_cross_check(&response, key, version),
                Ok(CrossCheck::Decoded),
                "{key:?} v{version} response, seed {seed}"
            );
        }
    }
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    let big = prop_oneof![Just(i32::MAX), Just(-2), Just(0x7fff_0000), any::<i32>()];
    prop_oneof![
        (any::<usize>(), big).prop_map(|(at, value)| Mutation::Int32 { at, value }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

#[test]
fn real_clients_frames_decode_as_the_walker_says() {
    let frames = corpus();
    assert!(frames.len() > 50, "corpus of {} frames", frames.len());
    for frame in &frames {
        assert_eq!(frame.cross_check(), Ok(CrossCheck::Decoded), "{frame:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
    #[test]
    fn mutated_frames_never_reach_an_unbounded_allocation(
        pair in 0..1000usize, seed in 0..1000u64,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let versions = every_version();
        let (key, version) = versions[pair % versions.len()];
        let (Some(mut request), Some(mut response)) =
            (request_sketch(key, version, seed), response_sketch(key, version, seed)) else {
            return Ok(());
        };
        for mutation in &mutations {
            request = mutate(&request, mutation);
            response = mutate(&response, mutation);
        }
        proptest::prop_assert!(request_cross_check(&request).is_ok(), "{:?}", request_cross_check(&request));
        let checked = response_cross_check(&response, key, version);
        proptest::prop_assert!(checked.is_ok(), "{:?}", checked);
    }

    #[test]
    fn mutated_real_frames_never_reach_an_unbounded_allocation(
        index in 0..1000usize, mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let frames = corpus();
        let frame = &frames[index % frames.len()];
        let mut bytes = frame.bytes().clone();
        for mutation in &mutations {
            bytes = mutate(&bytes, mutation);
        }
        let checked = frame.with_bytes(bytes).cross_check();
        proptest::prop_assert!(checked.is_ok(), "{:?}", checked);
    }
}
