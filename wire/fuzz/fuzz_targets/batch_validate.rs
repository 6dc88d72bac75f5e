//! `batch::validate` on arbitrary record sets never panics; every batch it
//! accepts lies inside the input, back to back, and after `seal` (with and
//! without log-append time) still validates with the same records and the
//! sealed offset, epoch and timestamp.
//!
//! Random bytes almost never carry a good CRC-32C, so when the input's first
//! byte is odd the harness writes correct CRCs into every batch it can frame
//! first, which lets the fuzzer reach the checks behind the CRC and `seal`.
#![no_main]

use bytes::Bytes;
use kascade_wire::kafka::batch::{self, HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

/// Writes the right CRC into each batch whose length field frames it.
fn fix_crcs(records: &mut [u8]) {
    let mut at = 0;
    while records.len() - at >= HEADER_BYTES {
        let b = &records[at..];
        let len = i32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let Some(len) = usize::try_from(len).ok().map(|l| l + 12) else {
            return;
        };
        if len < HEADER_BYTES || len > b.len() {
            return;
        }
        let crc = crc32c::crc32c(&records[at + 21..at + len]);
        records[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at += len;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode], rest)) = data.split_first_chunk::<1>() else {
        return;
    };
    let Some((&seed, records)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let mut records = records.to_vec();
    if mode & 1 == 1 {
        fix_crcs(&mut records);
    }
    let records = &records[..];
    let Ok(batches) = batch::validate(records) else {
        return;
    };
    let seed = i64::from_be_bytes(seed);
    let mut at = 0;
    for info in batches {
        assert_eq!(info.start, at, "batches are back to back");
        assert!(info.len >= HEADER_BYTES && info.start + info.len <= records.len());
        at += info.len;
        let one = Bytes::copy_from_slice(&records[info.start..info.start + info.len]);
        for append_time in [None, Some(seed.wrapping_mul(3))] {
            let sealed = batch::seal(one.clone(), seed, seed as i32, append_time);
            let again = batch::validate(&sealed).expect("a sealed batch validates");
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].record_count, info.record_count);
            assert_eq!(batch::base_offset(&sealed), Some(seed));
            assert_eq!(batch::leader_epoch(&sealed), Some(seed as i32));
            let max = append_time.unwrap_or(info.max_timestamp);
            assert_eq!(batch::max_timestamp(&sealed), Some(max));
            assert_eq!(
                &sealed[HEADER_BYTES..],
                &one[HEADER_BYTES..],
                "records untouched"
            );
        }
    }
    assert_eq!(at, records.len(), "the whole set is accounted for");
});
