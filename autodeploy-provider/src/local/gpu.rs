//! GPU slots: the configured GPU ids, each held by at most one instance at a time.
//!
//! An instance's share is handed to its process as `CUDA_VISIBLE_DEVICES`, which is all the
//! isolation a process on a shared machine gets; the pool only makes sure two instances are
//! never told the same GPU.

use parking_lot::Mutex;

use autodeploy_core::ProviderError;

/// The GPUs an instance may see, as it is told through `CUDA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GpuGrant {
    /// GPUs are not managed: the process inherits the gateway's environment.
    Unmanaged,
    /// These ids, possibly none (then the process sees no GPU at all).
    Ids(Vec<String>),
}

impl GpuGrant {
    /// The value of `CUDA_VISIBLE_DEVICES`, or `None` to leave it alone.
    pub(crate) fn visible_devices(&self) -> Option<String> {
        match self {
            Self::Unmanaged => None,
            Self::Ids(ids) => Some(ids.join(",")),
        }
    }

    /// The ids held, empty when unmanaged.
    pub(crate) fn ids(&self) -> &[String] {
        match self {
            Self::Unmanaged => &[],
            Self::Ids(ids) => ids,
        }
    }
}

/// The free list of configured GPU ids.
#[derive(Debug)]
pub(crate) struct GpuPool {
    all: Vec<String>,
    free: Mutex<Vec<String>>,
}

impl GpuPool {
    /// A pool of `ids`, all free; an empty list means GPUs are not managed.
    pub(crate) fn new(ids: Vec<String>) -> Self {
        Self {
            free: Mutex::new(ids.clone()),
            all: ids,
        }
    }

    /// Takes `count` ids for one instance. With no ids configured every request is granted
    /// [`GpuGrant::Unmanaged`]; with ids configured a count of 0 is granted no GPU, and a
    /// count the free list cannot cover is refused with `NoCapacity`.
    pub(crate) fn acquire(&self, count: u32) -> Result<GpuGrant, ProviderError> {
        if self.all.is_empty() {
            return Ok(GpuGrant::Unmanaged);
        }
        let count = count as usize;
        if count > self.all.len() {
            return Err(ProviderError::NoCapacity(format!(
                "an instance needs {count} GPUs but this machine has {} ({})",
                self.all.len(),
                self.all.join(",")
            )));
        }
        let mut free = self.free.lock();
        if count > free.len() {
            return Err(ProviderError::NoCapacity(format!(
                "an instance needs {count} GPUs, {} of {} are free",
                free.len(),
                self.all.len()
            )));
        }
        // Lowest ids first, so allocation is predictable for people reading `nvidia-smi`.
        free.sort_by_key(|a| self.position(a));
        Ok(GpuGrant::Ids(free.drain(..count).collect()))
    }

    /// Marks `ids` taken by an instance found from an earlier run. Ids that are not
    /// configured, or already taken, are skipped (and logged): the survivor keeps running.
    pub(crate) fn claim(&self, ids: &[String]) -> GpuGrant {
        if self.all.is_empty() {
            return GpuGrant::Unmanaged;
        }
        let mut free = self.free.lock();
        let mut got = Vec::new();
        for id in ids {
            if let Some(pos) = free.iter().position(|f| f == id) {
                got.push(free.swap_remove(pos));
            } else {
                tracing::warn!(gpu = %id, "adopted instance holds a GPU that is not free");
            }
        }
        GpuGrant::Ids(got)
    }

    /// Returns a grant's ids to the free list.
    pub(crate) fn release(&self, grant: &GpuGrant) {
        let mut free = self.free.lock();
        for id in grant.ids() {
            if self.all.contains(id) && !free.contains(id) {
                free.push(id.clone());
            }
        }
    }

    fn position(&self, id: &str) -> usize {
        self.all.iter().position(|a| a == id).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> GpuPool {
        GpuPool::new(vec!["0".into(), "1".into(), "2".into()])
    }

    #[test]
    fn unmanaged_pool_grants_anything() {
        let pool = GpuPool::new(Vec::new());
        assert_eq!(pool.acquire(8).unwrap(), GpuGrant::Unmanaged);
        assert_eq!(GpuGrant::Unmanaged.visible_devices(), None);
    }

    #[test]
    fn count_zero_gets_no_gpu_when_managed() {
        let grant = pool().acquire(0).unwrap();
        assert_eq!(grant.visible_devices().as_deref(), Some(""));
    }

    #[test]
    fn exhaustion_is_no_capacity_and_release_frees() {
        let pool = pool();
        let a = pool.acquire(2).unwrap();
        assert_eq!(a.visible_devices().as_deref(), Some("0,1"));
        assert!(matches!(pool.acquire(2), Err(ProviderError::NoCapacity(_))));
        assert!(matches!(
            pool.acquire(4),
            Err(ProviderError::NoCapacity(m)) if m.contains("has 3")
        ));
        pool.release(&a);
        pool.release(&a);
        assert_eq!(
            pool.acquire(3).unwrap().visible_devices().as_deref(),
            Some("0,1,2")
        );
    }

    #[test]
    fn claim_takes_only_free_ids() {
        let pool = pool();
        let a = pool.acquire(1).unwrap();
        let claimed = pool.claim(&["0".into(), "2".into(), "9".into()]);
        assert_eq!(claimed, GpuGrant::Ids(vec!["2".into()]));
        pool.release(&a);
        assert_eq!(
            pool.acquire(2).unwrap().visible_devices().as_deref(),
            Some("0,1")
        );
    }
}
