//! A real Prometheus server (Debian's `prometheus`) in a lab node's netns, with a config written
//! for this run, scraping the given targets every second; killed and its data removed on drop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{poll, traffic::http_get};

pub struct Prometheus {
    child: Child,
    dir: PathBuf,
    pub netns: String,
    /// Where it listens inside `netns`.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts it in `netns` on `addr`, scraping `targets` (HOST:PORT) as job `injector`, and waits
    /// until every target is up.
    pub fn start(
        netns: &str,
        addr: SocketAddr,
        targets: &[String],
        tag: &str,
    ) -> Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("{tag}-prometheus"));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("prometheus.yml");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &cfg,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: injector\n    static_configs: [{{targets: [{}]}}]\n",
                list.join(", ")
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("prometheus (Debian package prometheus; scripts/bootstrap.sh installs it)")?;
        let p = Prometheus {
            child,
            dir,
            netns: netns.to_string(),
            addr,
        };
        let want = targets.len().to_string();
        poll::until(
            "Prometheus to scrape every target",
            Duration::from_secs(60),
            || {
                let (code, body) = http_get(
                    &p.netns,
                    p.addr,
                    "/api/v1/query?query=count(up%3D%3D1)",
                    "application/json",
                )?;
                let v: serde_json::Value = serde_json::from_str(&body)?;
                anyhow::ensure!(
                    code == 200
                        && v["data"]["result"][0]["value"][1].as_str() == Some(want.as_str()),
                    "{code} {body}"
                );
                Ok(())
            },
        );
        Ok(p)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
