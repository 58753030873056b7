//! `injector top`: every fault's counters and rates (packets/s from the difference between two
//! refreshes), redrawn in place on a terminal, appended otherwise.

use std::{
    collections::HashMap,
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use injector_common::Outcome;

use super::{Failure, get, output};
use crate::{
    api::{FaultView, Status},
    client::Endpoint,
};

pub fn run(ep: &Endpoint, interval: Duration, count: Option<u32>) -> Result<(), Failure> {
    let tty = std::io::stdout().is_terminal();
    let mut prev: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last = Instant::now();
    let mut n = 0;
    loop {
        let faults: Vec<FaultView> = get(ep, "/v1/faults")?;
        let status: Status = get(ep, "/v1/status")?;
        let outcomes = output::shown_outcomes(&faults);
        let dt = last.elapsed().as_secs_f64().max(1e-3);
        last = Instant::now();
        let mut head: Vec<String> = ["NAME", "ACTION", "LEFT"].map(String::from).to_vec();
        head.extend(outcomes.iter().map(|o| o.column().to_string()));
        head.extend(outcomes.iter().map(|o| format!("{}/s", o.column())));
        let mut rows = vec![head];
        let mut next = HashMap::new();
        for f in &faults {
            let name = f.name.clone();
            // Every outcome, indexed by outcome: the columns shown may change between refreshes.
            let now: Vec<u64> = Outcome::ALL.iter().map(|&o| f.total(o)).collect();
            let mut row = vec![
                name.clone(),
                f.spec.action_text(),
                output::duration(f.remaining_s),
            ];
            row.extend(outcomes.iter().map(|&o| now[o as usize].to_string()));
            row.extend(outcomes.iter().map(|&o| match prev.get(&name) {
                Some(p) => format!(
                    "{:.0}",
                    now[o as usize].saturating_sub(p[o as usize]) as f64 / dt
                ),
                None => "-".into(),
            }));
            rows.push(row);
            next.insert(name, now);
        }
        prev = next;
        let armed = if status.armed { "armed" } else { "DISARMED" };
        let head = format!(
            "injector top  {armed}  {} faults  refresh {:.1}s  (Ctrl-C to quit)\n\n",
            rows.len() - 1,
            interval.as_secs_f64()
        );
        if tty {
            print!("\x1b[H\x1b[2J");
        }
        print!(
            "{head}{}",
            if rows.len() == 1 {
                "no faults\n".to_string()
            } else {
                output::columns(&rows)
            }
        );
        if !tty {
            println!();
        }
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
