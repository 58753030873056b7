//! Reading `injector local stats` output in tests and the demo.

/// `key` of the `fault NAME ... hook=HOOK` line, e.g. `dropped`.
pub fn fault(stats: &str, name: &str, hook: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(&format!("fault {name} ")) && l.contains(&format!(" hook={hook} ")))
        .unwrap_or_else(|| panic!("no line for fault {name} hook {hook} in:\n{stats}"));
    value(line, key)
}

/// `key` of the `hook HOOK ...` line, e.g. `skipped`.
pub fn hook(stats: &str, hook: &str, key: &str) -> u64 {
    let line = stats
        .lines()
        .find(|l| l.starts_with(&format!("hook {hook} ")))
        .unwrap_or_else(|| panic!("no line for hook {hook} in:\n{stats}"));
    value(line, key)
}

/// `key=N` of one line.
pub fn value(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in: {line}"))
        .parse()
        .expect("a number")
}

/// Asserts that `k` successes of `n` trials lie within the 99.9% two-sided bound (+-3.29 sd,
/// normal approximation) of Binomial(n, p); `what` names the measurement in the failure.
pub fn assert_binomial(k: u64, n: u64, p: f64, what: &str) {
    let mean = (n as f64 * p).round() as u64;
    let bound = (3.29 * (n as f64 * p * (1.0 - p)).sqrt()).ceil() as u64;
    assert!(
        k.abs_diff(mean) <= bound,
        "{what}: {k} of {n}, want {mean} +- {bound} (p = {p})"
    );
}

/// Losses and their bursts (runs of consecutive losses) in a sequence of per-packet outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bursts {
    pub packets: u64,
    pub lost: u64,
    pub bursts: u64,
}

impl Bursts {
    /// `lost[i]`: packet `i` was lost.
    pub fn of(lost: impl IntoIterator<Item = bool>) -> Bursts {
        let mut b = Bursts {
            packets: 0,
            lost: 0,
            bursts: 0,
        };
        let mut prev = false;
        for l in lost {
            b.packets += 1;
            b.lost += u64::from(l);
            b.bursts += u64::from(l && !prev);
            prev = l;
        }
        b
    }

    pub fn loss(&self) -> f64 {
        self.lost as f64 / self.packets as f64
    }

    pub fn mean_burst(&self) -> f64 {
        self.lost as f64 / self.bursts as f64
    }
}

/// Asserts that losses `b` follow the Gilbert chain (every packet lost in the bad state, none in
/// the good one) of mean loss `loss` and mean burst `burst`, within 99.9% bounds (+-3.29 sd):
/// the loss ratio's variance is the binomial one inflated by the chain's correlation,
/// `(1 + l) / (1 - l)` with `l = 1 - p - r`; a burst is geometric with mean `1 / r` and variance
/// `(1 - r) / r^2`. Also asserts the bound would tell these bursts from independent loss's,
/// `1 / (1 - loss)`: a test that cannot fail proves nothing.
pub fn assert_gilbert(b: &Bursts, loss: f64, burst: f64, what: &str) {
    let r = 1.0 / burst;
    let p = loss * r / (1.0 - loss);
    let l = 1.0 - p - r;
    let n = b.packets as f64;
    let loss_bound = 3.29 * (loss * (1.0 - loss) / n * (1.0 + l) / (1.0 - l)).sqrt();
    let burst_bound = 3.29 * (1.0 - r).sqrt() / r / (b.bursts.max(1) as f64).sqrt();
    let independent = 1.0 / (1.0 - loss);
    assert!(
        (burst - independent).abs() > 2.0 * burst_bound,
        "{what}: the bound ({burst_bound:.3}) cannot tell a mean burst of {burst} from \
         independent loss's {independent:.3}: more packets"
    );
    assert!(
        (b.loss() - loss).abs() <= loss_bound,
        "{what}: loss {:.5} ({} of {}), want {loss} +- {loss_bound:.5}",
        b.loss(),
        b.lost,
        b.packets
    );
    assert!(
        (b.mean_burst() - burst).abs() <= burst_bound,
        "{what}: mean burst {:.3} ({} bursts), want {burst} +- {burst_bound:.3} (independent \
         loss: {independent:.3})",
        b.mean_burst(),
        b.bursts
    );
}
