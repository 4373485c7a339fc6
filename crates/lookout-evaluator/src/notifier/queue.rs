//! The notification queue: bounded, dropping the oldest alerts when full, as Prometheus's
//! notifier manager does (`--alertmanager.notification-queue-capacity`, default 10000).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Prometheus's default queue capacity.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Prometheus's maximum number of alerts per request (`maxBatchSize`).
pub const MAX_BATCH_SIZE: usize = 256;

/// A bounded FIFO of items; pushing beyond the capacity drops the oldest items.
pub struct BoundedQueue<T> {
    capacity: usize,
    items: Mutex<VecDeque<T>>,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> BoundedQueue<T> {
        BoundedQueue {
            capacity: capacity.max(1),
            items: Mutex::new(VecDeque::new()),
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `items`; returns how many items (new or queued) were dropped to stay within
    /// the capacity. When `items` alone exceed the capacity, the first ones are dropped.
    pub fn push(&self, mut items: Vec<T>) -> usize {
        let mut dropped = 0;
        if items.len() > self.capacity {
            dropped += items.len() - self.capacity;
            items.drain(..items.len() - self.capacity);
        }
        let Ok(mut q) = self.items.lock() else {
            return dropped + items.len();
        };
        let overflow = (q.len() + items.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            q.drain(..overflow);
            dropped += overflow;
        }
        q.extend(items);
        dropped
    }

    /// Removes and returns up to `max` items from the front.
    pub fn pop_batch(&self, max: usize) -> Vec<T> {
        match self.items.lock() {
            Ok(mut q) => {
                let n = q.len().min(max);
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.items.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_when_full() {
        let q = BoundedQueue::new(3);
        assert_eq!(q.push(vec![1, 2]), 0);
        assert_eq!(q.push(vec![3, 4]), 1);
        assert_eq!(q.pop_batch(10), vec![2, 3, 4]);
        assert_eq!(q.push(vec![1, 2, 3, 4, 5]), 2);
        assert_eq!(q.pop_batch(2), vec![3, 4]);
        assert_eq!(q.len(), 1);
    }
}
