//! Loss: independent (`loss: 5%`) or bursty by the Gilbert-Elliott model, from the mean loss and
//! the mean burst length (`loss: 5%, burst: 4`) or from its four parameters (`loss_model:
//! ge:p,r,h,k`, netem's gemodel); the derivation and the kernel's thresholds.
//!
//! The model: two states, good and bad. A packet is lost with the loss of the state it finds
//! (`1 - k` in good, `1 - h` in bad), then the state moves: good -> bad with chance `p`, bad ->
//! good with chance `r`. In the long run the chain is in the bad state a share
//! `pi_B = p / (p + r)` of packets, so the mean loss is `pi_B (1 - h) + (1 - pi_B) (1 - k)`.
//! With `h = 0`, `k = 1` (Gilbert: every packet lost in bad, none in good) a burst of losses is
//! exactly a stay in the bad state, geometric with mean `1 / r`. So a mean loss `L` and a mean
//! burst `B` give `r = 1 / B` and `p = L r / (1 - L) = L / (B (1 - L))`. Independent loss is
//! the case `p + r = 1` (the next state does not depend on this one): its bursts average
//! `1 / (1 - L)`; a longer `B` clusters the losses.

use injector_common::Ge as KernelGe;

use super::{
    compile::drop_threshold,
    spec::{FieldError, err, percent},
};

/// How a fault loses packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Each packet lost with this probability (0, 1], on its own.
    Random(f64),
    Bursty(Ge),
}

impl Loss {
    /// The mean share of packets lost.
    pub fn mean(&self) -> f64 {
        match self {
            Loss::Random(p) => *p,
            Loss::Bursty(g) => g.mean_loss(),
        }
    }
}

/// Gilbert-Elliott parameters, each a probability in [0, 1], as netem's gemodel names them:
/// `p` = P(good -> bad), `r` = P(bad -> good), `h` = P(delivered | bad), `k` = P(delivered |
/// good). (tc's command line takes `1-h` and `1-k`.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ge {
    pub p: f64,
    pub r: f64,
    pub h: f64,
    pub k: f64,
}

impl Ge {
    /// The Gilbert model (`h = 0`, `k = 1`) with mean loss `loss` (0, 1) and mean burst length
    /// `burst` (packets, >= 1): `r = 1 / burst`, `p = loss / (burst (1 - loss))`. `None` when
    /// no such chain exists (`p > 1`: the burst is shorter than `loss / (1 - loss)`).
    pub fn from_mean(loss: f64, burst: f64) -> Option<Ge> {
        if !(loss > 0.0 && loss < 1.0 && burst >= 1.0) {
            return None;
        }
        let r = 1.0 / burst;
        let p = loss * r / (1.0 - loss);
        // p = 1 exactly at the shortest burst, give or take a rounding.
        (p <= 1.0 + 1e-12).then_some(Ge {
            p: p.min(1.0),
            r,
            h: 0.0,
            k: 1.0,
        })
    }

    /// The long-run share of packets in the bad state.
    pub fn bad_share(&self) -> f64 {
        if self.p + self.r == 0.0 {
            0.0 // never leaves the good state it starts in
        } else {
            self.p / (self.p + self.r)
        }
    }

    /// The long-run mean loss.
    pub fn mean_loss(&self) -> f64 {
        let b = self.bad_share();
        b * (1.0 - self.h) + (1.0 - b) * (1.0 - self.k)
    }

    /// The mean length of a run of consecutive losses, for the Gilbert model (`h = 0`, `k = 1`:
    /// `1 / r`); `None` for the others.
    pub fn mean_burst(&self) -> Option<f64> {
        (self.h == 0.0 && self.k == 1.0 && self.r > 0.0).then(|| 1.0 / self.r)
    }

    /// The kernel's thresholds.
    pub fn kernel(&self) -> KernelGe {
        KernelGe {
            p: drop_threshold(self.p),
            r: drop_threshold(self.r),
            loss_bad: drop_threshold(1.0 - self.h),
            loss_good: drop_threshold(1.0 - self.k),
        }
    }
}

/// `burst`: a mean burst length in packets, a number >= 1 (`4`, `2.5`).
fn burst(field: &str, v: &str) -> Result<f64, FieldError> {
    match v.trim().parse::<f64>() {
        Ok(b) if b.is_finite() && b >= 1.0 => Ok(b),
        _ => Err(err(
            field,
            format!("'{v}': the mean burst length is a number of packets, at least 1 (e.g. 4)"),
        )),
    }
}

/// `loss_model`: `ge:p,r[,h[,k]]`, percentages; `h` defaults to 0% (every packet lost in the bad
/// state), `k` to 100% (none in the good one).
fn model(field: &str, v: &str) -> Result<Ge, FieldError> {
    let fix = "write ge:p,r[,h[,k]] in percent, e.g. ge:1%,25% (p = P(good->bad), r = \
               P(bad->good), h and k = P(delivered) in the bad and good state, netem's gemodel)";
    let Some(params) = v.trim().strip_prefix("ge:") else {
        return Err(err(field, format!("'{v}': {fix}")));
    };
    let ps: Vec<&str> = params.split(',').collect();
    if !(2..=4).contains(&ps.len()) {
        return Err(err(field, format!("'{v}': {fix}")));
    }
    let name = ["p", "r", "h", "k"];
    let mut x = [0.0, 0.0, 0.0, 1.0];
    for (i, s) in ps.iter().enumerate() {
        x[i] =
            percent(field, s).map_err(|e| err(field, format!("{}: {}; {fix}", name[i], e.msg)))?;
    }
    Ok(Ge {
        p: x[0],
        r: x[1],
        h: x[2],
        k: x[3],
    })
}

/// Validates the loss fields: `loss` (a share), `burst` (with `loss`), `loss_model` (instead of
/// `loss`). `None` when no loss is given. `f` names a field with its path.
pub(super) fn validate(
    f: &dyn Fn(&str) -> String,
    loss: Option<&str>,
    burst_v: Option<&str>,
    model_v: Option<&str>,
) -> Result<Option<Loss>, FieldError> {
    match (loss, burst_v, model_v) {
        (None, None, None) => Ok(None),
        (None, Some(b), None) if super::rate::looks_like_size(b) => Err(err(
            &f("burst"),
            format!(
                "'{b}': burst is the mean length of a loss burst (packets); a rate's bucket is \
                 rate_burst (e.g. rate 10mbit with rate_burst {b})"
            ),
        )),
        (None, Some(b), None) => Err(err(
            &f("burst"),
            format!(
                "'{b}': a mean burst length is for loss; add loss (e.g. loss 5% with burst {b})"
            ),
        )),
        (Some(_), _, Some(_)) => Err(err(
            &f("loss_model"),
            "the model gives the loss itself; leave loss out (or give loss with burst instead \
             of the model)",
        )),
        (None, Some(_), Some(_)) => Err(err(
            &f("burst"),
            "the model gives the bursts itself; leave burst out",
        )),
        (Some(l), b, None) => {
            let p = percent(&f("loss"), l)?;
            if p == 0.0 {
                return Err(err(
                    &f("loss"),
                    format!("'{l}': must be more than 0% (use dry_run to only count)"),
                ));
            }
            let Some(b) = b else {
                return Ok(Some(Loss::Random(p)));
            };
            let len = burst(&f("burst"), b)?;
            if p >= 1.0 {
                return Err(err(
                    &f("burst"),
                    format!(
                        "'{b}': with loss {l} every packet is lost; leave burst out (or use blackhole)"
                    ),
                ));
            }
            Ge::from_mean(p, len)
                .map(|g| Some(Loss::Bursty(g)))
                .ok_or_else(|| {
                    let min = p / (1.0 - p);
                    err(
                        &f("burst"),
                        format!(
                            "'{b}': with loss {l} the mean burst is at least loss / (1 - loss) = \
                         {min:.3} packets (the bad state cannot be entered more often than \
                         every packet); give a longer burst or a lower loss"
                        ),
                    )
                })
        }
        (None, None, Some(m)) => {
            let g = model(&f("loss_model"), m)?;
            if g.mean_loss() <= 0.0 {
                return Err(err(
                    &f("loss_model"),
                    format!(
                        "'{m}': loses nothing (mean loss 0%); raise p, or lower h or k \
                         (use dry_run to only count)"
                    ),
                ));
            }
            Ok(Some(Loss::Bursty(g)))
        }
    }
}

/// `5%`, `5% burst 4`, `ge:1%,25%,0%,100%`: the loss as tables show it.
pub fn text(loss: Option<&str>, burst: Option<&str>, model: Option<&str>) -> Option<String> {
    match (loss, model) {
        (Some(l), _) => Some(match burst {
            Some(b) => format!("loss {l} burst {b}"),
            None => format!("loss {l}"),
        }),
        (None, Some(m)) => Some(format!("loss {m}")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(loss: Option<&str>, burst: Option<&str>, model: Option<&str>) -> Result<Loss, String> {
        validate(&|n: &str| n.to_string(), loss, burst, model)
            .map(Option::unwrap)
            .map_err(|e| e.to_string())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_gilbert_model_follows_from_mean_loss_and_burst() {
        let g = Ge::from_mean(0.05, 4.0).unwrap();
        assert!(close(g.r, 0.25) && close(g.p, 0.05 / (4.0 * 0.95)), "{g:?}");
        assert_eq!((g.h, g.k), (0.0, 1.0));
        assert!(close(g.mean_loss(), 0.05));
        assert!(close(g.mean_burst().unwrap(), 4.0));
        // The burst of independent loss, 1 / (1 - L), is the chain with p + r = 1.
        let g = Ge::from_mean(0.2, 1.25).unwrap();
        assert!(close(g.p + g.r, 1.0), "{g:?}");
        // The shortest burst a loss allows: p = 1.
        assert!(close(Ge::from_mean(0.5, 1.0).unwrap().p, 1.0));
        assert_eq!(Ge::from_mean(0.9, 8.0), None);
        assert!(Ge::from_mean(0.9, 9.0).is_some());
        assert_eq!(Ge::from_mean(0.0, 4.0), None);
        assert_eq!(Ge::from_mean(0.1, 0.5), None);
    }

    #[test]
    fn kernel_thresholds_are_exact_at_the_ends() {
        let k = Ge {
            p: 0.0,
            r: 1.0,
            h: 0.0,
            k: 1.0,
        }
        .kernel();
        assert_eq!(
            (k.p, k.r, k.loss_bad, k.loss_good),
            (0, 1 << 32, 1 << 32, 0)
        );
        let k = Ge::from_mean(0.05, 4.0).unwrap().kernel();
        assert_eq!(k.r, 1 << 30);
    }

    #[test]
    fn loss_fields_parse_and_refuse_with_the_field_and_fix() {
        assert_eq!(v(Some("5%"), None, None), Ok(Loss::Random(0.05)));
        let Ok(Loss::Bursty(g)) = v(Some("5%"), Some("4"), None) else {
            panic!()
        };
        assert!(close(g.mean_loss(), 0.05) && close(g.r, 0.25));
        let Ok(Loss::Bursty(g)) = v(None, None, Some("ge:1%,25%")) else {
            panic!()
        };
        assert_eq!((g.p, g.r, g.h, g.k), (0.01, 0.25, 0.0, 1.0));
        let Ok(Loss::Bursty(g)) = v(None, None, Some("ge:1%,25%,10%,99%")) else {
            panic!()
        };
        assert_eq!((g.h, g.k), (0.1, 0.99));
        let e = |l, b, m, want: &str| {
            let got = v(l, b, m).unwrap_err();
            assert!(got.contains(want), "want '{want}' in '{got}'");
        };
        e(
            None,
            Some("4"),
            None,
            "burst: '4': a mean burst length is for loss; add loss",
        );
        e(
            Some("5%"),
            Some("0.5"),
            None,
            "burst: '0.5': the mean burst length is a number of packets, at least 1",
        );
        e(Some("5%"), Some("many"), None, "burst: 'many'");
        e(
            Some("90%"),
            Some("2"),
            None,
            "burst: '2': with loss 90% the mean burst is at least loss / (1 - loss) = 9.000 packets",
        );
        e(
            Some("100%"),
            Some("2"),
            None,
            "burst: '2': with loss 100% every packet is lost",
        );
        e(
            Some("5%"),
            None,
            Some("ge:1%,2%"),
            "loss_model: the model gives the loss itself; leave loss out",
        );
        e(
            None,
            Some("4"),
            Some("ge:1%,2%"),
            "burst: the model gives the bursts itself",
        );
        e(
            None,
            None,
            Some("gilbert"),
            "loss_model: 'gilbert': write ge:p,r[,h[,k]] in percent",
        );
        e(
            None,
            None,
            Some("ge:1%"),
            "loss_model: 'ge:1%': write ge:p,r",
        );
        e(
            None,
            None,
            Some("ge:1%,200%"),
            "loss_model: r: '200%': must be between 0% and 100%; write ge:",
        );
        e(
            None,
            None,
            Some("ge:0%,50%"),
            "loss_model: 'ge:0%,50%': loses nothing",
        );
        e(Some("0%"), None, None, "loss: '0%': must be more than 0%");
    }

    #[test]
    fn loss_reads_back_in_tables() {
        assert_eq!(text(Some("5%"), None, None).unwrap(), "loss 5%");
        assert_eq!(
            text(Some("5%"), Some("4"), None).unwrap(),
            "loss 5% burst 4"
        );
        assert_eq!(
            text(None, None, Some("ge:1%,25%")).unwrap(),
            "loss ge:1%,25%"
        );
        assert_eq!(text(None, None, None), None);
    }
}
