//! Per-sandbox resource metrics: every `metrics_interval_ms` the sampler reads what each running sandbox
//! uses (its backend's [`crate::backend::SandboxBackend::usage`]: cgroups and writable layer), turns the
//! cpu time into a percentage over the interval, and keeps the samples in memory for `metrics_window_s`.
//!
//! Owns the series (one ring per sandbox, dropped when the sandbox is forgotten), their live feed (the
//! `/metrics/stream` SSE), and the per-sandbox gauges of the Prometheus page, capped at
//! `metrics_max_series` sandboxes so that a thousand sandboxes cannot blow up a scraper's label set.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sandpit_isolate::usage::Usage;
use sandpit_types::observe::MetricSample;
use tokio::sync::{broadcast, watch};

use crate::engine::Engine;
use crate::time::{now_ms, rfc3339};

/// How often, how long and how many (the daemon's config).
#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    pub interval: Duration,
    pub window: Duration,
    pub max_series: usize,
}

/// One sandbox's reading: id, what it uses (`None`: could not be read), cpu limit, disk cap in MiB.
type Reading = (String, Option<Usage>, Option<f64>, Option<u64>);

#[derive(Debug, Default)]
struct Series {
    /// (ms since the epoch, sample), oldest first.
    samples: VecDeque<(i64, Arc<MetricSample>)>,
    /// The cpu time at the previous reading, and when it was read.
    last_cpu: Option<(Instant, u64)>,
}

/// The samples and their live feed.
#[derive(Debug)]
pub struct Sampler {
    cfg: SamplerConfig,
    series: Mutex<HashMap<String, Series>>,
    live: broadcast::Sender<(Arc<str>, Arc<MetricSample>)>,
    host_cpus: f64,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            series: Mutex::new(HashMap::new()),
            live: broadcast::Sender::new(256),
            host_cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        })
    }

    pub fn interval(&self) -> Duration {
        self.cfg.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Series>> {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Samples every interval until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let sandboxes = engine.sampled().await;
            let engine2 = engine.clone();
            let readings = tokio::task::spawn_blocking(move || {
                sandboxes
                    .into_iter()
                    .map(|(id, h, cpu, disk_mb)| {
                        let u = engine2.usage_of(&h);
                        (id, u, cpu, disk_mb)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            self.record(readings, &|id| engine.tenant_of(id).is_some());
        }
    }

    /// Turns readings into samples; forgets the series of sandboxes `known` no longer knows.
    fn record(&self, readings: Vec<Reading>, known: &dyn Fn(&str) -> bool) {
        let now = Instant::now();
        let at = now_ms();
        let window_ms = i64::try_from(self.cfg.window.as_millis()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        {
            let mut series = self.lock();
            series.retain(|id, _| known(id));
            for (id, usage, cpu_limit, disk_mb) in readings {
                let Some(u) = usage else { continue };
                let s = series.entry(id.clone()).or_default();
                let cpu_used_pct = match s.last_cpu {
                    Some((t, ns)) if now > t => {
                        let dt = now.duration_since(t).as_nanos() as f64;
                        (u.cpu_ns.saturating_sub(ns) as f64 / dt * 100.0 * 10.0).round() / 10.0
                    }
                    _ => 0.0,
                };
                s.last_cpu = Some((now, u.cpu_ns));
                let sample = Arc::new(MetricSample {
                    timestamp: rfc3339(at),
                    cpu_used_pct,
                    cpu_count: cpu_limit.or(u.cpu_limit).unwrap_or(self.host_cpus),
                    mem_used: u.mem_used,
                    mem_limit: u.mem_limit,
                    disk_used: u.disk_used,
                    disk_limit: if u.disk_limit > 0 {
                        u.disk_limit
                    } else {
                        disk_mb.map_or(0, |mb| mb << 20)
                    },
                    pids: u.pids,
                });
                s.samples.push_back((at, sample.clone()));
                while s.samples.front().is_some_and(|(t, _)| at - t > window_ms) {
                    s.samples.pop_front();
                }
                out.push((Arc::<str>::from(id), sample));
            }
        }
        for item in out {
            let _ = self.live.send(item);
        }
    }

    /// Sandbox `id`'s samples from `start` to `end` (ms, inclusive), oldest first.
    pub fn range(&self, id: &str, start: Option<i64>, end: Option<i64>) -> Vec<MetricSample> {
        self.lock().get(id).map_or_else(Vec::new, |s| {
            s.samples
                .iter()
                .filter(|(t, _)| start.is_none_or(|a| *t >= a) && end.is_none_or(|b| *t <= b))
                .map(|(_, m)| (**m).clone())
                .collect()
        })
    }

    /// Sandbox `id`'s last sample.
    pub fn latest(&self, id: &str) -> Option<Arc<MetricSample>> {
        self.lock()
            .get(id)
            .and_then(|s| s.samples.back().map(|(_, m)| m.clone()))
    }

    /// Every sample taken from now on, with its sandbox.
    pub fn subscribe(&self) -> broadcast::Receiver<(Arc<str>, Arc<MetricSample>)> {
        self.live.subscribe()
    }

    /// The per-sandbox gauges for `/metrics`: the latest sample of at most `max_series` sandboxes (the
    /// busiest by cpu), and how many were left out.
    pub fn render_prometheus(&self, out: &mut String) {
        type Field = fn(&MetricSample) -> f64;
        let mut latest: Vec<(String, Arc<MetricSample>)> = self
            .lock()
            .iter()
            .filter_map(|(id, s)| s.samples.back().map(|(_, m)| (id.clone(), m.clone())))
            .collect();
        latest.sort_by(|a, b| {
            b.1.cpu_used_pct
                .total_cmp(&a.1.cpu_used_pct)
                .then_with(|| a.0.cmp(&b.0))
        });
        let omitted = latest.len().saturating_sub(self.cfg.max_series);
        latest.truncate(self.cfg.max_series);
        let gauges: [(&str, &str, Field); 5] = [
            (
                "sandpit_sandbox_cpu_used_pct",
                "CPU used over the last sample interval, percent of one cpu.",
                |m| m.cpu_used_pct,
            ),
            (
                "sandpit_sandbox_memory_used_bytes",
                "Memory in use, bytes.",
                |m| m.mem_used as f64,
            ),
            (
                "sandpit_sandbox_memory_limit_bytes",
                "Memory limit, bytes (0: none).",
                |m| m.mem_limit as f64,
            ),
            (
                "sandpit_sandbox_disk_used_bytes",
                "Bytes on the writable layer.",
                |m| m.disk_used as f64,
            ),
            ("sandpit_sandbox_pids", "Tasks in the sandbox.", |m| {
                m.pids as f64
            }),
        ];
        for (name, help, f) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (id, m) in &latest {
                let _ = writeln!(out, "{name}{{sandbox=\"{id}\"}} {}", f(m));
            }
        }
        let _ = writeln!(
            out,
            "# HELP sandpit_sandbox_series_omitted Sandboxes left out of the per-sandbox gauges (metrics_max_series).\n\
             # TYPE sandpit_sandbox_series_omitted gauge\nsandpit_sandbox_series_omitted {omitted}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(max_series: usize) -> Arc<Sampler> {
        Sampler::new(SamplerConfig {
            interval: Duration::from_millis(100),
            window: Duration::from_secs(60),
            max_series,
        })
    }

    fn reading(id: &str, cpu_ns: u64) -> Reading {
        let u = Usage {
            cpu_ns,
            mem_used: 100,
            pids: 2,
            ..Usage::default()
        };
        (id.to_owned(), Some(u), Some(1.0), Some(64))
    }

    #[test]
    fn cpu_is_the_difference_over_the_interval_and_gone_sandboxes_are_forgotten() {
        let s = sampler(10);
        s.record(vec![reading("a", 0)], &|_| true);
        std::thread::sleep(Duration::from_millis(100));
        s.record(vec![reading("a", 1_000_000_000)], &|_| true);
        let all = s.range("a", None, None);
        assert_eq!(all.len(), 2);
        assert!((all[0].cpu_used_pct - 0.0).abs() < f64::EPSILON);
        // One cpu-second in (at least) 100 ms: up to 1000 %, and certainly more than 100.
        assert!(all[1].cpu_used_pct > 100.0, "{:?}", all[1]);
        assert_eq!(
            (all[1].mem_used, all[1].pids, all[1].disk_limit),
            (100, 2, 64 << 20)
        );
        assert!(s.range("a", Some(now_ms() + 1000), None).is_empty());
        s.record(vec![], &|_| false);
        assert!(s.range("a", None, None).is_empty() && s.latest("a").is_none());
    }

    #[test]
    fn the_prometheus_page_names_at_most_max_series_sandboxes() {
        let s = sampler(2);
        s.record(
            (0..5).map(|i| reading(&format!("sb_{i}"), 0)).collect(),
            &|_| true,
        );
        let mut text = String::new();
        s.render_prometheus(&mut text);
        assert_eq!(
            text.matches("sandpit_sandbox_pids{sandbox=").count(),
            2,
            "{text}"
        );
        assert!(text.contains("sandpit_sandbox_series_omitted 3"), "{text}");
    }
}
