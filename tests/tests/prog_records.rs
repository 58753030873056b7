//! The daemon's records in the real SPECS map (`kernel::specs`, `daemon::records`): records of
//! every size come back as written, a shorter record replaces a longer one without leaving its
//! parts behind, a record whose write was cut short reads as an error (never as other bytes),
//! an own record keeps its earlier copy readable across such a write, and a process that opens
//! the pins afresh finds and removes what another left.

#[path = "support/bpf.rs"]
#[expect(dead_code, reason = "the shared loader; this file uses its maps only")]
mod bpf;
#[expect(dead_code, reason = "shared packet builders; none used here")]
mod support;

use std::collections::BTreeSet;

use aya::maps::{HashMap, MapData};
use injector::{daemon::records, kernel::Maps};
use injector_common::{SPEC_PART, SPEC_PARTS, SPEC_RECORD, SpecKey, maps};

/// `len` bytes that differ with `seed`.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The SPECS map opened from its pin, as another process sees it.
fn raw(b: &bpf::Loaded) -> HashMap<MapData, SpecKey, [u8; SPEC_PART]> {
    let m = MapData::from_pin(b.pins().join(maps::SPECS)).unwrap();
    HashMap::try_from(aya::maps::Map::HashMap(m)).unwrap()
}

/// The parts stored for record `id`.
fn parts(b: &bpf::Loaded, id: u32) -> BTreeSet<u32> {
    raw(b)
        .keys()
        .map(Result::unwrap)
        .filter(|k| k.id == id)
        .map(|k| k.part)
        .collect()
}

#[test]
fn records_of_every_size_come_back_and_a_shorter_one_leaves_no_parts() {
    let mut b = bpf::Loaded::new("rec");
    let sizes = [
        0,
        1,
        300,
        SPEC_PART - 16,
        SPEC_PART - 15,
        3 * SPEC_PART,
        SPEC_RECORD,
    ];
    let data: Vec<(u32, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (i as u32 + 10, bytes(n, i as u8)))
        .collect();
    let refs: Vec<(u32, &[u8])> = data.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    b.maps.records_mut().put_new(&refs).unwrap();
    for (id, d) in &data {
        assert_eq!(
            &b.maps.records().get(*id).unwrap().unwrap().bytes,
            d,
            "{id}"
        );
    }
    // The largest record takes every part a record may have; replaced by 300 bytes, it keeps one.
    let big = 10 + sizes.len() as u32 - 1;
    assert_eq!(parts(&b, big).len(), SPEC_PARTS as usize);
    b.maps.records_mut().put(big, &bytes(300, 9)).unwrap();
    assert_eq!(parts(&b, big), BTreeSet::from([0]));
    assert_eq!(
        b.maps.records().get(big).unwrap().unwrap().bytes,
        bytes(300, 9)
    );
    // And grown again.
    b.maps
        .records_mut()
        .put(big, &bytes(2 * SPEC_PART, 3))
        .unwrap();
    assert_eq!(parts(&b, big), BTreeSet::from([0, 1, 2]));
    assert_eq!(
        b.maps.records().get(big).unwrap().unwrap().bytes,
        bytes(2 * SPEC_PART, 3)
    );
    // Too large is refused, and changes nothing.
    let e = b
        .maps
        .records_mut()
        .put(big, &bytes(SPEC_RECORD + 1, 0))
        .unwrap_err();
    assert!(e.to_string().contains("byte limit"), "{e}");
    assert_eq!(parts(&b, big), BTreeSet::from([0, 1, 2]));
    // A record never written.
    assert!(b.maps.records().get(99).unwrap().is_none());
}

#[test]
fn a_record_cut_short_fails_to_read_and_an_own_record_keeps_its_earlier_copy() {
    let mut b = bpf::Loaded::new("rect");
    // A manifest-like record over two parts, then its part 1 from another write (an overwrite
    // that died between its parts).
    b.maps
        .records_mut()
        .put(5, &bytes(SPEC_PART + 100, 1))
        .unwrap();
    let mut other = raw(&b);
    other
        .insert(SpecKey { id: 5, part: 1 }, [7u8; SPEC_PART], 0)
        .unwrap();
    let e = format!("{:#}", b.maps.records().get(5).unwrap_err());
    assert!(e.contains("checksum"), "{e}");
    // A part 0 whose tail is gone.
    other.remove(&SpecKey { id: 5, part: 1 }).unwrap();
    let e = format!("{:#}", b.maps.records().get(5).unwrap_err());
    assert!(e.contains("part 1 is missing"), "{e}");

    // An own record large enough for two parts, written twice: the copies alternate.
    let first: Vec<String> = (0..400).map(|i| format!("veth{i:08x}")).collect();
    let second: Vec<String> = (0..400).map(|i| format!("veth{:08x}", i + 1)).collect();
    records::put_own(&mut b.maps, records::key::CLSACT, &first).unwrap();
    records::put_own(&mut b.maps, records::key::CLSACT, &second).unwrap();
    assert_eq!(
        records::own::<Vec<String>>(&b.maps, records::key::CLSACT),
        Some(second.clone())
    );
    // The later copy torn: the earlier one is read.
    let later = (records::key::CLSACT..=records::key::CLSACT + 1)
        .max_by_key(|id| b.maps.records().get(*id).unwrap().unwrap().written_ns)
        .unwrap();
    other
        .insert(SpecKey { id: later, part: 1 }, [0u8; SPEC_PART], 0)
        .unwrap();
    assert_eq!(
        records::own::<Vec<String>>(&b.maps, records::key::CLSACT),
        Some(first)
    );
    // The next write goes over the torn copy, and is read.
    records::put_own(&mut b.maps, records::key::CLSACT, &second).unwrap();
    assert_eq!(
        records::own::<Vec<String>>(&b.maps, records::key::CLSACT),
        Some(second)
    );
}

#[test]
fn a_process_opening_the_pins_finds_and_removes_what_another_left() {
    let mut b = bpf::Loaded::new("reco");
    let data: Vec<(u32, Vec<u8>)> = (0..50).map(|i| (i, bytes(i as usize * 200, 2))).collect();
    let refs: Vec<(u32, &[u8])> = data.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    b.maps.records_mut().put_new(&refs).unwrap();
    // A record whose write died before its part 0: parts without a head.
    raw(&b)
        .insert(SpecKey { id: 77, part: 1 }, [1u8; SPEC_PART], 0)
        .unwrap();
    let mut other = Maps::open_pinned(b.pins()).unwrap();
    let ids = records::fault_ids(&mut other).unwrap();
    assert_eq!(ids, (0..50).chain([77]).collect::<BTreeSet<u32>>());
    assert!(other.records().get(77).unwrap().is_none());
    // Keep the even ones.
    let keep: BTreeSet<u32> = (0..50).filter(|i| i % 2 == 0).collect();
    assert_eq!(records::collect_garbage(&mut other, &keep).unwrap(), 26);
    let left: BTreeSet<u32> = raw(&b).keys().map(|k| k.unwrap().id).collect();
    assert_eq!(left, keep);
    for id in keep {
        assert_eq!(
            other.records().get(id).unwrap().unwrap().bytes,
            data[id as usize].1
        );
    }
}
