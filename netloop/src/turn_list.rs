//! Lists of connections the loop visits once per turn (to flush, to read
//! again), each entry at most once.

use crate::token::ConnId;

/// A list of connections the loop visits once per turn, with a spare so
/// that taking the list for a pass does not allocate.
#[derive(Default)]
pub(crate) struct TurnList {
    items: Vec<ConnId>,
    spare: Vec<ConnId>,
}

impl TurnList {
    pub(crate) fn push(&mut self, id: ConnId) {
        self.items.push(id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the entries so far; entries pushed meanwhile wait for the next pass.
    pub(crate) fn take(&mut self) -> Vec<ConnId> {
        let mut batch = std::mem::take(&mut self.spare);
        std::mem::swap(&mut batch, &mut self.items);
        batch
    }

    /// Returns a taken batch's memory.
    pub(crate) fn give_back(&mut self, mut batch: Vec<ConnId>) {
        batch.clear();
        self.spare = batch;
    }
}
