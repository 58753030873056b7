//! Reading `injector local stats` output in tests and the demo, and the statistics the tests
//! assert with and the benchmarks report (bounds and confidence intervals).

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

/// A distribution-free 95% confidence interval of percentile `p` (0..=100) of the population a
/// sorted sample `v` was drawn from: the order statistics at ranks `n q -+ 1.96 sqrt(n q (1-q))`
/// (the number of values below the true percentile is Binomial(n, q); normal approximation,
/// widened to whole ranks). The upper end is infinite where that rank is past the sample (a
/// p99.9 of fewer than a few thousand values has none): only more values would bound it.
pub fn percentile_ci(v: &[f64], p: f64) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let q = p / 100.0;
    let half = 1.96 * (n * q * (1.0 - q)).sqrt();
    // 1-based ranks; the interval [X(lo), X(hi)].
    let lo = (n * q - half).floor();
    let hi = (n * q + half).ceil() + 1.0;
    let at = |r: f64| v[(r as usize).clamp(1, v.len()) - 1];
    (
        if lo < 1.0 { f64::NEG_INFINITY } else { at(lo) },
        if hi > n { f64::INFINITY } else { at(hi) },
    )
}

/// Paired rounds' ratios (each round's measurement over its own baseline) summed up: their
/// geometric mean and its 95% confidence interval (Student's t on the logarithms: rounds are
/// few), and how many rounds would narrow that interval to +-`within` (e.g. 0.01: 1%) at the
/// spread seen. Fewer than two rounds bound nothing: `0..inf`, infinitely many rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatioCi {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub rounds_for: f64,
}

pub fn ratio_ci(ratios: &[f64], within: f64) -> RatioCi {
    let n = ratios.len();
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        let m = mean.exp();
        return RatioCi {
            mean: m,
            lo: 0.0,
            hi: f64::INFINITY,
            rounds_for: f64::INFINITY,
        };
    }
    let sd = (logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    // Enough rounds that 1.96 sd / sqrt(rounds) is within ln(1 + within).
    let rounds_for = (1.96 * sd / (1.0 + within).ln()).powi(2).ceil();
    RatioCi {
        mean: mean.exp(),
        lo: (mean - half).exp(),
        hi: (mean + half).exp(),
        rounds_for,
    }
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (two-sided 95%).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        _ => 1.96,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A uniform(0, 1) sample of `n`, sorted.
    fn uniform(rng: &mut Rng, n: usize) -> Vec<f64> {
        let mut v: Vec<f64> = (0..n)
            .map(|_| (rng.u64() >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn percentile_intervals_cover_the_true_percentile_at_least_95_times_in_100() {
        // Uniform(0, 1): the true p-th percentile is p / 100. Of 100 samples each, the count of
        // intervals that hold it is Binomial(100, 0.95-0.97) (ranks widened outwards): at least
        // 88 (-3.29 sd). Too narrow an interval (e.g. +-1 sd of ranks: 68%) falls below; too
        // wide a one is caught by the ranks below.
        let mut rng = Rng::new(0x5eed_00c1);
        for (p, n) in [(50.0, 1000), (99.0, 3000), (99.9, 30_000)] {
            let hits = (0..100)
                .filter(|_| {
                    let (lo, hi) = percentile_ci(&uniform(&mut rng, n), p);
                    lo <= p / 100.0 && p / 100.0 <= hi
                })
                .count();
            assert!(
                hits >= 88,
                "p{p} of {n}: {hits} of 100 intervals hold the true percentile"
            );
        }
    }

    #[test]
    fn a_percentile_past_the_sample_has_no_upper_end() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let (lo, hi) = percentile_ci(&v, 99.9);
        assert!(lo >= 995.0 && hi.is_infinite(), "{lo} {hi}");
        // The median of 1000: ranks 500 -+ 31 (1.96 sd), widened to whole ranks.
        assert_eq!(percentile_ci(&v, 50.0), (469.0, 532.0));
    }

    #[test]
    fn ratio_intervals_narrow_with_rounds_and_say_how_many_1_percent_needs() {
        // Five rounds spread as the idle tax's (0.81-1.10x): an interval far wider than 1%.
        let r = ratio_ci(&[0.81, 0.95, 1.10, 0.92, 0.98], 0.01);
        assert!(
            r.lo < 0.9 && r.hi > 1.0 && r.lo < r.mean && r.mean < r.hi,
            "{r:?}"
        );
        assert!((0.94..0.96).contains(&r.mean), "{r:?}");
        // sd of the logs ~0.11: (1.96 * 0.11 / 0.00995)^2 ~ 470 rounds.
        assert!((300.0..700.0).contains(&r.rounds_for), "{r:?}");
        // The same spread over 100 rounds: about sqrt(20) times narrower.
        let many: Vec<f64> = (0..20)
            .flat_map(|_| [0.81, 0.95, 1.10, 0.92, 0.98])
            .collect();
        let m = ratio_ci(&many, 0.01);
        let w = |r: RatioCi| (r.hi / r.lo).ln();
        assert!(w(r) / w(m) > 4.0 && w(r) / w(m) < 8.0, "{r:?} {m:?}");
        assert!(ratio_ci(&[0.9], 0.01).hi.is_infinite());
    }
}
