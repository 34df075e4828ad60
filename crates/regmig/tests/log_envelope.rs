//! The record envelope: every record round-trips byte-exactly, and no damage decodes.

use proptest::prelude::*;
use regmig::log::keys::event_key;
use regmig::log::{
    decode_record, encode_record, LogError, Record, FORMAT_VERSION, FORMAT_VERSION_V1,
};
use uuid::Uuid;

fn arbitrary_record() -> impl Strategy<Value = Record> {
    (
        any::<u16>(),
        any::<[u8; 16]>(),
        1..=u64::MAX,
        1..=u64::MAX,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::option::of(any::<[u8; 32]>()),
    )
        .prop_map(
            |(kind, id_bytes, seq, global_seq, recorded_at_ms, payload, prev_hash)| Record {
                // Both envelope versions: version 1 has no chain field.
                format_version: if prev_hash.is_some() {
                    FORMAT_VERSION
                } else {
                    FORMAT_VERSION_V1
                },
                kind,
                // Force the version and variant bits of a uuid v7.
                procedure_id: uuid::Builder::from_random_bytes(id_bytes)
                    .with_version(uuid::Version::SortRand)
                    .into_uuid(),
                seq,
                global_seq,
                recorded_at_ms,
                payload,
                prev_hash,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_record_round_trips_byte_exactly(record in arbitrary_record()) {
        let key = event_key(record.procedure_id, record.seq);
        let bytes = encode_record(&record);
        prop_assert_eq!(bytes.len(), record.encoded_len());
        let decoded = decode_record(&key, &bytes).expect("a fresh record decodes");
        prop_assert_eq!(&decoded, &record);
        prop_assert_eq!(encode_record(&decoded), bytes);
    }

    #[test]
    fn a_changed_byte_never_decodes(record in arbitrary_record(), position in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let key = event_key(record.procedure_id, record.seq);
        let mut bytes = encode_record(&record);
        let position = position.index(bytes.len());
        bytes[position] ^= mask;
        let error = decode_record(&key, &bytes).expect_err("a damaged record must not decode");
        prop_assert!(error.is_damage());
        prop_assert_eq!(error.procedure_id(), Some(record.procedure_id));
        prop_assert_eq!(error.seq(), Some(record.seq));
        prop_assert_eq!(error.key().map(str::to_string), Some(regmig::log::keys::hex(&key)));
    }

    #[test]
    fn a_cut_record_is_truncated_or_bad(record in arbitrary_record(), keep in any::<prop::sample::Index>()) {
        let key = event_key(record.procedure_id, record.seq);
        let bytes = encode_record(&record);
        let keep = keep.index(bytes.len());
        let error = decode_record(&key, &bytes[..keep]).expect_err("a cut record must not decode");
        prop_assert!(
            matches!(error, LogError::Truncated { .. } | LogError::BadChecksum { .. }),
            "unexpected error {error:?}"
        );
    }
}

#[test]
fn a_newer_format_version_with_a_valid_checksum_is_unknown_not_damage_of_another_kind() {
    let procedure_id = Uuid::now_v7();
    let record = Record {
        format_version: FORMAT_VERSION,
        kind: 3,
        procedure_id,
        seq: 5,
        global_seq: 9,
        recorded_at_ms: 1,
        payload: vec![1, 2, 3],
        prev_hash: Some([7; 32]),
    };
    let mut bytes = encode_record(&record);
    bytes[0] = 3;
    let body_len = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body_len]).to_be_bytes();
    bytes[body_len..].copy_from_slice(&crc);
    let error =
        decode_record(&event_key(procedure_id, 5), &bytes).expect_err("version 3 is unknown");
    assert!(
        matches!(error, LogError::UnknownFormatVersion { procedure_id: id, seq: 5, version: 3, .. } if id == procedure_id),
        "{error:?}"
    );
}

#[test]
fn a_record_under_a_key_that_is_not_an_event_key_is_a_malformed_key() {
    let error = decode_record(b"Xnot-an-event-key", &[0; 60]).expect_err("not an event key");
    assert!(matches!(error, LogError::MalformedKey { .. }), "{error:?}");
}

#[test]
fn a_record_of_a_non_v7_procedure_id_is_malformed() {
    let procedure_id = Uuid::from_u128(0x1234); // version 0
    let record = Record {
        format_version: FORMAT_VERSION,
        kind: 1,
        procedure_id,
        seq: 1,
        global_seq: 1,
        recorded_at_ms: 1,
        payload: vec![],
        prev_hash: Some([0; 32]),
    };
    let bytes = encode_record(&record);
    let error = decode_record(&event_key(procedure_id, 1), &bytes).expect_err("not a v7 id");
    assert!(
        matches!(error, LogError::Malformed { seq: 1, .. }),
        "{error:?}"
    );
}
