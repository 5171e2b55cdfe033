//! Group commit of QoS >= 1 publishes to the store's outbox: publishes that arrive while
//! a write is in progress wait in the next batch, and each batch is one write with one
//! fsync. A plain type: the actor runs the writes.

/// The batches of one session. `T` is one publish with whoever waits for it.
#[derive(Debug)]
pub(crate) struct GroupCommit<T> {
    /// Waiting for the next write.
    next: Vec<T>,
    /// In the write running now.
    writing: usize,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        GroupCommit {
            next: Vec::new(),
            writing: 0,
        }
    }
}

impl<T> GroupCommit<T> {
    /// Adds a publish to the next batch.
    pub(crate) fn push(&mut self, item: T) {
        self.next.push(item);
    }

    /// Publishes waiting or being written.
    pub(crate) fn len(&self) -> usize {
        self.next.len() + self.writing
    }

    /// The batch to write now: `None` while a write runs or when nothing waits.
    pub(crate) fn start(&mut self) -> Option<Vec<T>> {
        if self.writing > 0 || self.next.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut self.next);
        self.writing = batch.len();
        Some(batch)
    }

    /// The running write ended (either way).
    pub(crate) fn finish(&mut self) {
        self.writing = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::GroupCommit;

    #[test]
    fn publishes_arriving_during_a_write_go_into_the_next_batch() {
        let mut g = GroupCommit::default();
        assert_eq!(g.start(), None::<Vec<u32>>, "nothing to write");
        g.push(1);
        g.push(2);
        assert_eq!(g.start(), Some(vec![1, 2]));
        g.push(3);
        assert_eq!(g.len(), 3, "two being written, one waiting");
        assert_eq!(g.start(), None, "one write at a time");
        g.finish();
        assert_eq!(g.start(), Some(vec![3]));
        g.finish();
        assert_eq!(g.len(), 0);
    }
}
