//! Endpoint choice: the ring against values computed with Python's hashlib, properties of the
//! ring and of shard maps, and how each strategy ejects, probes and falls back.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::health::{Health, HealthCell, Now, BACKOFF_MAX, BACKOFF_MIN};
use super::{
    key_hash, point, turns, Admission, Balance, Load, Pick, Picker, Ring, POINTS_PER_WEIGHT,
};
use crate::endpoint::{EndpointConfig, RouteKey};
use crate::transport::Addr;

/// Hashes of the integer keys `0..100_000`, computed once for every property case.
static KEYS: LazyLock<Vec<u64>> =
    LazyLock::new(|| (0..100_000).map(|k| key_hash(&RouteKey::Int(k))).collect());

fn config(addr: &str) -> EndpointConfig {
    EndpointConfig::new(addr.parse().unwrap())
}

/// An endpoint as the picker sees it, with the configuration it came from.
struct Ep {
    config: EndpointConfig,
    load: Load,
}

impl std::ops::Deref for Ep {
    type Target = Load;

    fn deref(&self) -> &Load {
        &self.load
    }
}

impl AsRef<Load> for Ep {
    fn as_ref(&self) -> &Load {
        &self.load
    }
}

fn picker(balance: Balance, configs: Vec<EndpointConfig>) -> (Picker, Vec<Ep>) {
    let (picker, configs) = Picker::new(balance, configs, RouteKey::Int(fastrand::u64(..)))
        .unwrap_or_else(|e| panic!("{}", e.message));
    let eps = configs
        .into_iter()
        .map(|config| Ep {
            config,
            load: Load::default(),
        })
        .collect();
    (picker, eps)
}

fn eject(ep: &Load, now: Instant) {
    ep.health.lock().failed(now);
}

fn pick(
    p: &Picker,
    eps: &[Ep],
    key: Option<RouteKey>,
    tried: &[usize],
    now: Instant,
) -> Option<Pick> {
    p.pick(eps, key.as_ref(), tried, &Now::at(now)).unwrap()
}

fn normal(index: usize) -> Option<Pick> {
    Some(Pick {
        index,
        admission: Admission::Normal,
    })
}

/// Share of [`KEYS`] owned by each member of `ring`.
fn counts(ring: &Ring, members: usize) -> Vec<usize> {
    let mut counts = vec![0; members];
    for &h in KEYS.iter() {
        counts[ring.owner(h).unwrap()] += 1;
    }
    counts
}

fn owners(ring: &Ring) -> Vec<usize> {
    KEYS.iter().map(|&h| ring.owner(h).unwrap()).collect()
}

#[test]
fn ring_matches_the_python_reference() {
    // Values printed by the Python snippet in ring.rs's module documentation.
    assert_eq!(point("10.0.0.1:3000", 0), 0x2ec2_a6eb_a17e_7f79);
    assert_eq!(key_hash(&RouteKey::Int(42)), 8306709966045482637);
    assert_eq!(
        key_hash(&RouteKey::Text("user:42".into())),
        16879443282065980770
    );
    let ring = Ring::new([
        ("10.0.0.1:3000", 1),
        ("10.0.0.2:3000", 2),
        ("unix:/run/a.sock", 1),
    ]);
    assert_eq!(ring.len(), 4 * POINTS_PER_WEIGHT as usize);
    let ints: Vec<usize> = (0..24)
        .map(|k| ring.owner(key_hash(&RouteKey::Int(k))).unwrap())
        .collect();
    assert_eq!(
        ints,
        [1, 0, 2, 1, 1, 0, 2, 2, 1, 0, 2, 1, 2, 2, 1, 0, 2, 0, 1, 1, 1, 0, 1, 1]
    );
    let texts: Vec<usize> = ["user:42", "", "alice", "bob", "\u{e9}t\u{e9}"]
        .iter()
        .map(|&k| ring.owner(key_hash(&RouteKey::from(k))).unwrap())
        .collect();
    assert_eq!(texts, [1, 2, 2, 1, 1]);
}

#[test]
fn the_ring_walk_meets_every_member_once_owner_first() {
    let ring = Ring::new([("a:1", 1), ("b:1", 3), ("c:1", 1)]);
    for &h in KEYS.iter().take(1000) {
        let walk: Vec<usize> = ring.walk(h).collect();
        assert_eq!(walk[0], ring.owner(h).unwrap());
        let mut sorted = walk.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
    }
    assert_eq!(Ring::new(std::iter::empty()).owner(7), None);
}

/// The cell's flag follows every change made under its lock, so its lock-free paths (admit,
/// usable and ok while in service) answer as the locked health would.
#[test]
fn health_cell_answers_as_its_health_does() {
    let t0 = Instant::now();
    let cell = HealthCell::default();
    let now = Now::at(t0);
    assert_eq!(cell.admit(&now), Some(Admission::Normal));
    assert!(cell.usable(&now));
    cell.ok();
    cell.lock().failed(t0);
    assert_eq!((cell.admit(&now), cell.usable(&now)), (None, false));
    let at = cell.lock().retry_at().unwrap();
    assert_eq!(cell.admit(&Now::at(at)), Some(Admission::Probe));
    assert_eq!(cell.admit(&Now::at(at)), None, "one probe at a time");
    // A success ends the ejection, failures and probe included.
    cell.ok();
    assert_eq!(cell.lock().failures(), 0);
    assert_eq!(cell.admit(&Now::at(at)), Some(Admission::Normal));
    cell.lock().failed(at);
    assert_eq!(cell.lock().failures(), 1, "counting starts over");
}

#[test]
fn health_ejects_probes_once_and_restores() {
    let t0 = Instant::now();
    let mut h = Health::default();
    assert_eq!(h.admit(&Now::at(t0)), Some(Admission::Normal));
    h.failed(t0);
    assert_eq!(
        (h.failures(), h.admit(&Now::at(t0)), h.usable(&Now::at(t0))),
        (1, None, false)
    );
    let at = h.retry_at().unwrap();
    assert!(
        at >= t0 + BACKOFF_MIN && at <= t0 + BACKOFF_MIN.mul_f64(1.2),
        "{:?}",
        at - t0
    );
    // Calls that were in flight failing now do not lengthen the backoff.
    h.failed(t0 + Duration::from_millis(1));
    assert_eq!((h.failures(), h.retry_at()), (1, Some(at)));
    // Once the backoff has passed, one call probes and the others wait for it.
    assert_eq!(h.admit(&Now::at(at)), Some(Admission::Probe));
    assert_eq!(
        (h.admit(&Now::at(at)), h.usable(&Now::at(at))),
        (None, false)
    );
    // A probe that decided nothing lets the next call probe.
    h.release_probe();
    assert_eq!(h.admit(&Now::at(at)), Some(Admission::Probe));
    // A failed probe doubles the backoff.
    h.failed(at);
    assert_eq!(h.failures(), 2);
    let again = h.retry_at().unwrap();
    assert!(again >= at + 2 * BACKOFF_MIN, "{:?}", again - at);
    assert_eq!(h.admit(&Now::at(again)), Some(Admission::Probe));
    h.ok();
    assert_eq!(
        (h.failures(), h.retry_at(), h.admit(&Now::at(again))),
        (0, None, Some(Admission::Normal))
    );
    // The backoff stops growing at its maximum (plus jitter).
    let mut at = again;
    for _ in 0..20 {
        h.failed(at);
        at = h.retry_at().unwrap();
    }
    h.failed(at);
    let gap = h.retry_at().unwrap() - at;
    assert!(
        gap >= BACKOFF_MAX && gap <= BACKOFF_MAX.mul_f64(1.2),
        "{gap:?}"
    );
}

#[test]
fn round_robin_turns_follow_weights() {
    let check =
        |weights: &[u64], expected: &[usize]| assert_eq!(turns(weights), expected, "{weights:?}");
    check(&[1], &[0]);
    check(&[1, 1, 1], &[0, 1, 2]);
    check(&[2, 1], &[0, 1, 0]);
    check(&[3, 1, 2], &[0, 1, 2, 0, 2, 0]);
}

#[test]
fn round_robin_spreads_by_weight_and_skips_ejected_endpoints() {
    let now = Instant::now();
    let mut configs = vec![config("a:1"), config("b:1"), config("c:1")];
    configs[2].weight = 2;
    let (p, eps) = picker(Balance::RoundRobin, configs);
    let mut seen = [0; 3];
    for _ in 0..40 {
        seen[pick(&p, &eps, None, &[], now).unwrap().index] += 1;
    }
    assert_eq!(seen, [10, 10, 20]);
    eject(&eps[1], now);
    let mut seen = [0; 3];
    for _ in 0..40 {
        let pick = pick(&p, &eps, None, &[], now).unwrap();
        assert_eq!(pick.admission, Admission::Normal);
        seen[pick.index] += 1;
    }
    assert_eq!(seen[1], 0);
    assert!(seen[0] >= 10 && seen[2] >= 20, "{seen:?}");
    // A retry never goes back to an endpoint it tried.
    assert_eq!(pick(&p, &eps, None, &[0], now), normal(2));
}

#[test]
fn least_pending_prefers_fewer_calls_per_unit_of_weight() {
    let now = Instant::now();
    let (p, eps) = picker(Balance::LeastPending, vec![config("a:1"), config("b:1")]);
    eps[0].in_flight.store(10, Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(pick(&p, &eps, None, &[], now), normal(1));
    }
    let mut configs = vec![config("a:1"), config("b:1")];
    configs[0].weight = 4;
    let (p, eps) = picker(Balance::LeastPending, configs);
    eps[0].in_flight.store(3, Ordering::Relaxed);
    eps[1].in_flight.store(1, Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(pick(&p, &eps, None, &[], now), normal(0));
    }
    // The less loaded endpoint ejected: the other takes the calls.
    eject(&eps[0], now);
    for _ in 0..20 {
        assert_eq!(pick(&p, &eps, None, &[], now), normal(1));
    }
    // With many endpoints, both random draws often land on ejected ones; the scan finds the rest.
    let configs: Vec<_> = (0..8).map(|i| config(&format!("h{i}:1"))).collect();
    let (p, eps) = picker(Balance::LeastPending, configs);
    for ep in &eps[..6] {
        eject(ep, now);
    }
    let mut seen = [0; 8];
    for _ in 0..200 {
        seen[pick(&p, &eps, None, &[], now).unwrap().index] += 1;
    }
    assert!(
        seen[..6].iter().all(|&n| n == 0) && seen[6] > 50 && seen[7] > 50,
        "{seen:?}"
    );
}

#[test]
fn hashring_walks_clockwise_past_ejected_endpoints() {
    let now = Instant::now();
    let addrs = ["a:1", "b:1", "c:1", "d:1"];
    let (p, eps) = picker(Balance::HashRing, addrs.iter().map(|a| config(a)).collect());
    let ring = Ring::new(addrs.iter().map(|&a| (a, 1)));
    let keys: Vec<RouteKey> = (0..200u64).map(RouteKey::Int).collect();
    let walk = |k: &RouteKey| ring.walk(key_hash(k)).collect::<Vec<_>>();
    for k in &keys {
        assert_eq!(
            pick(&p, &eps, Some(k.clone()), &[], now),
            normal(walk(k)[0])
        );
    }
    eject(&eps[2], now);
    for k in &keys {
        let w = walk(k);
        let expected = if w[0] == 2 { w[1] } else { w[0] };
        assert_eq!(
            pick(&p, &eps, Some(k.clone()), &[], now),
            normal(expected),
            "{k:?}"
        );
        // A retry goes on around the ring.
        let next = w
            .iter()
            .copied()
            .find(|&i| i != 2 && i != expected)
            .unwrap();
        assert_eq!(
            pick(&p, &eps, Some(k.clone()), &[expected], now),
            normal(next)
        );
    }
    // Without a key, each picker sticks to the endpoint of its own random key.
    eps[2].health.lock().ok();
    let first = pick(&p, &eps, None, &[], now).unwrap().index;
    for _ in 0..20 {
        assert_eq!(pick(&p, &eps, None, &[], now), normal(first));
    }
}

#[test]
fn shard_goes_to_the_backup_while_the_primary_is_down_and_probes_it_once() {
    let t0 = Instant::now();
    let mut a = config("a:1");
    a.shard = Some((0, 1));
    a.backup = Some("z:1".parse().unwrap());
    let mut b = config("b:1");
    b.shard = Some((2, 3));
    b.backup = Some("a:1".parse().unwrap());
    let (p, eps) = picker(Balance::Shard { count: 4 }, vec![a, b]);
    // The backup that was not listed became a third endpoint.
    assert_eq!(eps.len(), 3);
    assert_eq!(eps[2].config.addr.to_string(), "z:1");
    let key = |k: u64| Some(RouteKey::Int(k));
    assert_eq!(pick(&p, &eps, key(5), &[], t0), normal(0));
    assert_eq!(pick(&p, &eps, key(6), &[], t0), normal(1));
    eject(&eps[0], t0);
    assert_eq!(pick(&p, &eps, key(5), &[], t0), normal(2));
    // After the backoff, one call probes the primary; the others keep using the backup.
    let later = t0 + BACKOFF_MAX * 2;
    assert_eq!(
        pick(&p, &eps, key(4), &[], later),
        Some(Pick {
            index: 0,
            admission: Admission::Probe
        })
    );
    assert_eq!(pick(&p, &eps, key(4), &[], later), normal(2));
    eps[0].health.lock().ok();
    assert_eq!(pick(&p, &eps, key(4), &[], later), normal(0));
    // Primary and backup both down: the one whose backoff ends first is still tried, and
    // nothing outside the range's pair ever is.
    eject(&eps[1], t0);
    eject(&eps[0], t0 + Duration::from_secs(1));
    assert_eq!(
        pick(&p, &eps, key(2), &[], t0),
        Some(Pick {
            index: 1,
            admission: Admission::Forced
        })
    );
    assert_eq!(
        pick(&p, &eps, key(2), &[1], t0),
        Some(Pick {
            index: 0,
            admission: Admission::Forced
        })
    );
    assert_eq!(pick(&p, &eps, key(2), &[1, 0], t0), None);
    // Shard calls need an integer key.
    for key in [None, Some(RouteKey::from("user"))] {
        let err = p.pick(&eps, key.as_ref(), &[], &Now::at(t0)).unwrap_err();
        assert!(
            err.to_string()
                .contains("shard balancing needs an integer key"),
            "{err}"
        );
    }
    assert!(
        p.check_key(&RouteKey::from("user")).is_err() && p.check_key(&RouteKey::Int(1)).is_ok()
    );
}

#[test]
fn when_every_endpoint_is_out_the_earliest_backoff_is_tried() {
    let t0 = Instant::now();
    for balance in [
        Balance::RoundRobin,
        Balance::LeastPending,
        Balance::HashRing,
    ] {
        let (p, eps) = picker(
            balance.clone(),
            vec![config("a:1"), config("b:1"), config("c:1")],
        );
        eject(&eps[1], t0);
        eject(&eps[2], t0 + Duration::from_millis(200));
        eject(&eps[0], t0 + Duration::from_millis(400));
        let forced = |index| {
            Some(Pick {
                index,
                admission: Admission::Forced,
            })
        };
        assert_eq!(pick(&p, &eps, None, &[], t0), forced(1), "{balance}");
        assert_eq!(pick(&p, &eps, None, &[1], t0), forced(2), "{balance}");
        assert_eq!(pick(&p, &eps, None, &[1, 2, 0], t0), None, "{balance}");
    }
    // A single endpoint is always tried, so a client recovers as soon as its server is back.
    let (p, eps) = picker(Balance::RoundRobin, vec![config("a:1")]);
    eject(&eps[0], t0);
    assert_eq!(
        pick(&p, &eps, None, &[], t0),
        Some(Pick {
            index: 0,
            admission: Admission::Forced
        })
    );
}

#[test]
fn bad_endpoint_lists_are_refused_naming_the_address() {
    let shard = |addr: &str, range: Option<(u64, u64)>, backup: Option<&str>| EndpointConfig {
        shard: range,
        backup: backup.map(|b| b.parse().unwrap()),
        ..config(addr)
    };
    let weight = |addr: &str, weight| EndpointConfig {
        weight,
        ..config(addr)
    };
    let cases: Vec<(Balance, Vec<EndpointConfig>, &str)> = vec![
        (
            Balance::RoundRobin,
            vec![weight("a:1", 0)],
            "a:1: weight 0 is out of range; use 1 to 100",
        ),
        (
            Balance::HashRing,
            vec![weight("a:1", 101)],
            "a:1: weight 101 is out of range",
        ),
        (
            Balance::LeastPending,
            vec![config("a:1"), config("a:1")],
            "a:1 is listed twice (endpoints 0 and 1)",
        ),
        (
            Balance::HashRing,
            vec![shard("a:1", Some((0, 1)), None)],
            "a:1: a shard range needs shard balancing, not hashring",
        ),
        (
            Balance::Shard { count: 0 },
            vec![shard("a:1", Some((0, 0)), None)],
            "shard_count must be at least 1",
        ),
        (
            Balance::Shard { count: 2 },
            vec![config("a:1")],
            "a:1: shard balancing needs a range",
        ),
        (
            Balance::Shard { count: 2 },
            vec![shard("a:1", Some((0, 2)), None)],
            "a:1: shard range [0, 2] goes past 1",
        ),
        (
            Balance::Shard { count: 10 },
            vec![
                shard("a:1", Some((0, 4)), None),
                shard("b:1", Some((3, 9)), None),
            ],
            "b:1: shard range [3, 9] overlaps [0, 4] of a:1",
        ),
        (
            Balance::Shard { count: 10 },
            vec![
                shard("b:1", Some((6, 7)), None),
                shard("a:1", Some((1, 4)), None),
            ],
            "shard values [0, 0], [5, 5], [8, 9] of 0..10 are not covered",
        ),
        (
            Balance::Shard { count: 1 },
            vec![shard("a:1", Some((0, 0)), Some("a:1"))],
            "a:1: an endpoint cannot be its own backup",
        ),
    ];
    for (balance, configs, expected) in cases {
        let err = Picker::new(balance.clone(), configs, RouteKey::Int(0)).unwrap_err();
        assert!(
            err.message.contains(expected),
            "{balance}: {}\n  does not contain: {expected}",
            err.message
        );
    }
}

/// `n` distinct endpoint identities.
fn identities(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<String>> {
    prop::collection::hash_set((any::<[u8; 3]>(), 1024u16..), n).prop_map(|set| {
        set.into_iter()
            .map(|([a, b, c], port)| format!("10.{a}.{b}.{c}:{port}"))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn equal_weights_get_at_most_125_percent_of_a_fair_share(ids in identities(2..=10)) {
        let ring = Ring::new(ids.iter().map(|id| (id.as_str(), 1)));
        let fair = KEYS.len() as f64 / ids.len() as f64;
        let worst = counts(&ring, ids.len()).into_iter().max().unwrap() as f64 / fair;
        prop_assert!(worst <= 1.25, "worst share {worst:.3} of fair over {} endpoints", ids.len());
    }

    #[test]
    fn shares_follow_weights(ids in identities(2..=10), weights in prop::collection::vec(1u32..=5, 10)) {
        let members: Vec<(&str, u32)> = ids.iter().map(String::as_str).zip(weights).collect();
        let ring = Ring::new(members.iter().copied());
        let total: u32 = members.iter().map(|m| m.1).sum();
        for (i, n) in counts(&ring, members.len()).into_iter().enumerate() {
            let expected = KEYS.len() as f64 * f64::from(members[i].1) / f64::from(total);
            let ratio = n as f64 / expected;
            prop_assert!((0.75..=1.25).contains(&ratio), "{:?} got {ratio:.3} of its weighted share", members[i]);
        }
    }

    #[test]
    fn one_endpoint_more_or_less_moves_only_its_share(ids in identities(2..=10), which in any::<prop::sample::Index>()) {
        let n = ids.len();
        let gone = which.index(n);
        let all = Ring::new(ids.iter().map(|id| (id.as_str(), 1)));
        let rest: Vec<usize> = (0..n).filter(|&i| i != gone).collect();
        let fewer = Ring::new(rest.iter().map(|&i| (ids[i].as_str(), 1)));
        let mut moved = 0;
        for (before, after) in owners(&all).into_iter().zip(owners(&fewer)) {
            if before == gone {
                moved += 1;
            } else {
                // Keys of the endpoints that stay never move.
                prop_assert_eq!(before, rest[after]);
            }
        }
        let fraction = moved as f64 / KEYS.len() as f64;
        prop_assert!(fraction <= 1.5 / n as f64 && fraction >= 0.5 / n as f64, "moved {fraction:.4} with {n} endpoints");
    }

    #[test]
    fn the_ring_does_not_depend_on_the_order_of_the_list(
        ids in identities(1..=10),
        weights in prop::collection::vec(1u32..=3, 10),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
    ) {
        let members: Vec<(&str, u32)> = ids.iter().map(String::as_str).zip(weights).collect();
        let mut shuffled = members.clone();
        fastrand::Rng::with_seed(order).shuffle(&mut shuffled);
        let name = |ring: &Ring, list: &[(&str, u32)]| -> Vec<(u64, String)> {
            ring.entries().map(|(p, m)| (p, list[m].0.to_owned())).collect()
        };
        let a = Ring::new(members.iter().copied());
        let b = Ring::new(shuffled.iter().copied());
        prop_assert_eq!(name(&a, &members), name(&b, &shuffled));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn shard_keys_land_in_their_range_or_its_backup(
        count in 1u64..=64,
        cuts in prop::collection::vec(any::<u64>(), 0..8),
        backups in prop::collection::vec(0u8..3, 8),
        keys in prop::collection::vec(any::<u64>(), 1..40),
    ) {
        // Ranges from cut points, then each endpoint's backup: none, an address of its own, or
        // the next endpoint.
        let mut starts: Vec<u64> = cuts.iter().filter(|_| count > 1).map(|c| 1 + c % (count - 1)).collect();
        starts.push(0);
        starts.sort();
        starts.dedup();
        let ranges: Vec<(u64, u64)> =
            starts.iter().enumerate().map(|(i, &b)| (b, starts.get(i + 1).map_or(count - 1, |n| n - 1))).collect();
        let k = ranges.len();
        let configs: Vec<EndpointConfig> = ranges
            .iter()
            .enumerate()
            .map(|(i, &range)| EndpointConfig {
                shard: Some(range),
                backup: match backups[i] {
                    1 => Some(format!("10.9.0.{i}:3000").parse().unwrap()),
                    2 if k > 1 => Some(format!("10.0.0.{}:3000", (i + 1) % k).parse().unwrap()),
                    _ => None,
                },
                ..config(&format!("10.0.0.{i}:3000"))
            })
            .collect();
        let (p, eps) = picker(Balance::Shard { count }, configs.clone());
        let now = Instant::now();
        let index_of = |addr: &Addr| eps.iter().position(|e| e.config.addr == *addr).unwrap();
        for key in keys {
            let value = key % count;
            let r = ranges.iter().position(|&(b, e)| b <= value && value <= e).unwrap();
            prop_assert_eq!(pick(&p, &eps, Some(RouteKey::Int(key)), &[], now), normal(r));
            eject(&eps[r], now);
            let got = pick(&p, &eps, Some(RouteKey::Int(key)), &[], now).unwrap();
            match &configs[r].backup {
                Some(backup) if eps[index_of(backup)].health.lock().retry_at().is_none() => {
                    prop_assert_eq!(got, Pick { index: index_of(backup), admission: Admission::Normal });
                }
                _ => prop_assert_eq!(got.index, r),
            }
            eps[r].health.lock().ok();
        }
    }
}
