//! GPU assignment: the executor knows which devices it has (`--gpus N`, or `nvidia-smi -L` when
//! present) and hands each attempt that asks for `resources.gpus: N` N specific devices that no
//! other running attempt holds. A process gets them as `CUDA_VISIBLE_DEVICES` and
//! `NVIDIA_VISIBLE_DEVICES`, a container as a device request. The devices go back when the
//! attempt's [`GpuLease`] is dropped, that is when the attempt ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The devices of one executor and who holds them.
#[derive(Debug, Clone, Default)]
pub struct Gpus {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Device ids as the driver names them (`"0"`, `"1"`, …), in order.
    devices: Vec<String>,
    /// Index into `devices` → the attempt holding it.
    held: Mutex<BTreeMap<usize, String>>,
    /// Woken whenever devices come back.
    freed: tokio::sync::Notify,
}

/// Why an attempt got no devices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    #[error("resources.gpus asks for {wanted} GPUs; this executor has {total}")]
    TooMany { wanted: u32, total: usize },
    #[error("resources.gpus asks for {wanted} GPUs; {free} of {total} are free now")]
    Busy {
        wanted: u32,
        free: usize,
        total: usize,
    },
}

impl Gpus {
    /// `n` devices named `0` … `n-1`.
    #[must_use]
    pub fn new(n: u32) -> Self {
        Self::with_devices((0..n).map(|i| i.to_string()).collect())
    }

    /// These devices, by the ids the driver knows them by.
    #[must_use]
    pub fn with_devices(devices: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                devices,
                held: Mutex::new(BTreeMap::new()),
                freed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// `configured` devices when given (`--gpus N`), otherwise those `nvidia-smi -L` lists,
    /// otherwise none.
    #[must_use]
    pub fn configured_or_discovered(configured: Option<u32>) -> Self {
        match configured {
            Some(n) => Self::new(n),
            None => Self::with_devices(discover().unwrap_or_default()),
        }
    }

    /// How many devices there are.
    #[must_use]
    pub fn total(&self) -> usize {
        self.inner.devices.len()
    }

    /// How many no attempt holds.
    #[must_use]
    pub fn free(&self) -> usize {
        self.total() - self.held().len()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, String>> {
        // A panic while holding the lock leaves the map consistent (single inserts/removes).
        self.inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Assigns `n` free devices (the lowest free ids) to `holder`; they are free again when the
    /// lease is dropped. Asking for none gives an empty lease.
    pub fn acquire(&self, n: u32, holder: &str) -> Result<GpuLease, GpuError> {
        let total = self.total();
        if n as usize > total {
            return Err(GpuError::TooMany { wanted: n, total });
        }
        let mut held = self.held();
        let free: Vec<usize> = (0..total)
            .filter(|i| !held.contains_key(i))
            .take(n as usize)
            .collect();
        if free.len() < n as usize {
            return Err(GpuError::Busy {
                wanted: n,
                free: total - held.len(),
                total,
            });
        }
        for &i in &free {
            held.insert(i, holder.to_string());
        }
        Ok(GpuLease {
            indexes: free,
            gpus: self.clone(),
        })
    }

    /// [`Self::acquire`], waiting for devices to come back while too few are free; fails at once
    /// only when the executor has fewer devices than asked for at all.
    pub async fn acquire_when_free(&self, n: u32, holder: &str) -> Result<GpuLease, GpuError> {
        loop {
            // Registered before the attempt, so a device freed in between is not missed.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.acquire(n, holder) {
                Err(GpuError::Busy { .. }) => freed.await,
                other => return other,
            }
        }
    }

    /// Marks these device ids as held by `holder` (an attempt re-adopted with the devices it was
    /// given before a restart), so no other attempt gets them until the lease is dropped. Ids this
    /// executor does not have, or that someone else holds already, are left out (and logged).
    #[must_use]
    pub fn hold(&self, ids: &[String], holder: &str) -> GpuLease {
        let mut held = self.held();
        let mut indexes = Vec::new();
        for id in ids {
            match self.inner.devices.iter().position(|d| d == id) {
                Some(i) if !held.contains_key(&i) => {
                    held.insert(i, holder.to_string());
                    indexes.push(i);
                }
                Some(i) => {
                    tracing::warn!(device = %id, holder, other = %held[&i], "a re-adopted attempt's GPU is held by another attempt");
                }
                None => {
                    tracing::warn!(device = %id, holder, "a re-adopted attempt holds a GPU this executor does not have");
                }
            }
        }
        GpuLease {
            indexes,
            gpus: self.clone(),
        }
    }

    /// The attempt holding each held device id.
    #[must_use]
    pub fn holders(&self) -> BTreeMap<String, String> {
        self.held()
            .iter()
            .map(|(i, h)| (self.inner.devices[*i].clone(), h.clone()))
            .collect()
    }
}

/// Devices assigned to one attempt, until it is dropped.
#[derive(Debug)]
pub struct GpuLease {
    indexes: Vec<usize>,
    gpus: Gpus,
}

impl GpuLease {
    /// The device ids assigned.
    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        self.indexes
            .iter()
            .map(|i| self.gpus.inner.devices[*i].clone())
            .collect()
    }

    /// `true` when no device was asked for.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// What a host process is given: `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`, the
    /// assigned ids joined by commas (nothing when no device was asked for).
    #[must_use]
    pub fn process_env(&self) -> Vec<(String, String)> {
        if self.is_empty() {
            return Vec::new();
        }
        let ids = self.ids().join(",");
        vec![
            ("CUDA_VISIBLE_DEVICES".to_string(), ids.clone()),
            ("NVIDIA_VISIBLE_DEVICES".to_string(), ids),
        ]
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut held = self.gpus.held();
        for i in &self.indexes {
            held.remove(i);
        }
        drop(held);
        if !self.indexes.is_empty() {
            self.gpus.inner.freed.notify_waiters();
        }
    }
}

/// The device indexes `nvidia-smi -L` lists; `None` when it is absent or fails.
#[must_use]
pub fn discover() -> Option<Vec<String>> {
    let out = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        tracing::warn!(status = %out.status, "nvidia-smi -L failed; no GPUs discovered");
        return None;
    }
    let ids = parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout));
    tracing::info!(gpus = ids.len(), "GPUs discovered with nvidia-smi -L");
    Some(ids)
}

/// The indexes of `GPU 0: NVIDIA A100 (UUID: GPU-…)` lines (MIG lines below them are skipped).
#[must_use]
pub fn parse_nvidia_smi(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("GPU "))
        .filter_map(|rest| rest.split_once(':'))
        .map(|(index, _)| index.trim())
        .filter(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn devices_are_disjoint_and_come_back_when_the_lease_ends() {
        let gpus = Gpus::new(4);
        let a = gpus.acquire(2, "e1/train/1").unwrap();
        let b = gpus.acquire(1, "e1/eval/1").unwrap();
        assert_eq!(a.ids(), ["0", "1"]);
        assert_eq!(b.ids(), ["2"]);
        assert_eq!(gpus.free(), 1);
        assert_eq!(
            gpus.acquire(2, "e2/train/1").unwrap_err(),
            GpuError::Busy {
                wanted: 2,
                free: 1,
                total: 4
            }
        );
        assert_eq!(
            gpus.holders().get("2").map(String::as_str),
            Some("e1/eval/1")
        );
        drop(a);
        assert_eq!(gpus.free(), 3);
        let c = gpus.acquire(3, "e2/train/1").unwrap();
        assert_eq!(
            c.ids(),
            ["0", "1", "3"],
            "the freed devices and the last one"
        );
        assert_eq!(
            c.process_env(),
            [
                ("CUDA_VISIBLE_DEVICES".to_string(), "0,1,3".to_string()),
                ("NVIDIA_VISIBLE_DEVICES".to_string(), "0,1,3".to_string())
            ]
        );
        assert_eq!(
            gpus.acquire(5, "x").unwrap_err(),
            GpuError::TooMany {
                wanted: 5,
                total: 4
            }
        );
        let none = gpus.acquire(0, "cpu-only").unwrap();
        assert!(none.is_empty() && none.process_env().is_empty());
    }

    #[test]
    fn no_device_is_ever_held_by_two_running_attempts() {
        // 8 threads take 1–3 devices of 4 at random, mark them in use, check nobody else marked
        // them, and give them back; a device handed out twice shows as a count above 1.
        let gpus = Gpus::new(4);
        let in_use: Arc<Vec<AtomicU32>> = Arc::new((0..4).map(|_| AtomicU32::new(0)).collect());
        let granted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (gpus, in_use, granted) = (gpus.clone(), in_use.clone(), granted.clone());
                std::thread::spawn(move || {
                    for round in 0..2_000u32 {
                        let n = 1 + (t + round) % 3;
                        let Ok(lease) = gpus.acquire(n, &format!("{t}/{round}")) else {
                            continue;
                        };
                        granted.fetch_add(1, Ordering::Relaxed);
                        let ids: Vec<usize> =
                            lease.ids().iter().map(|i| i.parse().unwrap()).collect();
                        assert_eq!(ids.len(), n as usize);
                        for &i in &ids {
                            assert_eq!(in_use[i].fetch_add(1, Ordering::SeqCst), 0, "device {i}");
                        }
                        std::thread::yield_now();
                        for &i in &ids {
                            in_use[i].fetch_sub(1, Ordering::SeqCst);
                        }
                        drop(lease);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            granted.load(Ordering::Relaxed) > 1_000,
            "leases were granted"
        );
        assert_eq!(gpus.free(), 4);
    }

    #[test]
    fn devices_held_by_a_re_adopted_attempt_are_busy_until_its_lease_ends() {
        let gpus = Gpus::new(3);
        let adopted = gpus.hold(&["1".into(), "7".into()], "e1/train/1");
        assert_eq!(
            adopted.ids(),
            ["1"],
            "a device the executor lacks is left out"
        );
        assert_eq!(gpus.free(), 2);
        let next = gpus.acquire(2, "e2/train/1").unwrap();
        assert_eq!(
            next.ids(),
            ["0", "2"],
            "never the re-adopted attempt's device"
        );
        let other = gpus.hold(&["2".into()], "e3/x/1");
        assert!(other.is_empty(), "a held device is not held twice");
        drop(next);
        drop(adopted);
        assert_eq!(gpus.free(), 3);
    }

    #[tokio::test]
    async fn an_attempt_waits_for_busy_devices_and_fails_at_once_for_too_many() {
        let gpus = Gpus::new(2);
        let first = gpus.acquire(2, "a").unwrap();
        let waiting = tokio::spawn({
            let gpus = gpus.clone();
            async move { gpus.acquire_when_free(1, "b").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "both devices are busy");
        drop(first);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiter is woken when devices come back")
            .unwrap()
            .unwrap();
        assert_eq!(got.ids(), ["0"]);
        let err = gpus.acquire_when_free(3, "c").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "resources.gpus asks for 3 GPUs; this executor has 2"
        );
    }

    #[test]
    fn nvidia_smi_listing_is_parsed() {
        let text = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5a3c)\n  MIG 1g.5gb Device 0: (UUID: MIG-1)\nGPU 1: Tesla T4 (UUID: GPU-77)\n\n";
        assert_eq!(parse_nvidia_smi(text), ["0", "1"]);
        assert!(parse_nvidia_smi("No devices were found\n").is_empty());
        assert_eq!(Gpus::configured_or_discovered(Some(3)).total(), 3);
    }
}
