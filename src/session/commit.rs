//! Group commit of QoS >= 1 publishes to the store's outbox: publishes that arrive while
//! a write is in progress wait in the next batch, and each batch is one write with one
//! flush. A plain type: the session core asks for the write, the shell runs it.

/// The batches of one session. `T` is one publish with whoever waits for it.
#[derive(Debug)]
pub(crate) struct GroupCommit<T> {
    /// Waiting for the next write.
    next: Vec<T>,
    /// In the write running now.
    writing: Vec<T>,
    /// A write runs.
    busy: bool,
}

impl<T> Default for GroupCommit<T> {
    fn default() -> Self {
        GroupCommit {
            next: Vec::new(),
            writing: Vec::new(),
            busy: false,
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
        self.next.len() + self.writing.len()
    }

    /// The batch to write now (kept until [`finish`](Self::finish)): `None` while a
    /// write runs or when nothing waits.
    pub(crate) fn start(&mut self) -> Option<&mut [T]> {
        if self.busy || self.next.is_empty() {
            return None;
        }
        self.writing = std::mem::take(&mut self.next);
        self.busy = true;
        Some(&mut self.writing)
    }

    /// The running write ended (either way): its batch.
    pub(crate) fn finish(&mut self) -> Vec<T> {
        self.busy = false;
        std::mem::take(&mut self.writing)
    }
}

#[cfg(test)]
mod tests {
    use super::GroupCommit;

    #[test]
    fn publishes_arriving_during_a_write_go_into_the_next_batch() {
        let mut g = GroupCommit::default();
        assert_eq!(g.start(), None::<&mut [u32]>, "nothing to write");
        g.push(1);
        g.push(2);
        assert_eq!(g.start(), Some(&mut [1, 2][..]));
        g.push(3);
        assert_eq!(g.len(), 3, "two being written, one waiting");
        assert_eq!(g.start(), None, "one write at a time");
        assert_eq!(g.finish(), vec![1, 2]);
        assert_eq!(g.start(), Some(&mut [3][..]));
        assert_eq!(g.finish(), vec![3]);
        assert_eq!(g.len(), 0);
    }
}
