//! A revert stack for multi-step work: each step registers its undo; success disarms it.

pub struct Revert<'a> {
    undo: Vec<(String, Box<dyn FnOnce() + 'a>)>,
}

impl<'a> Revert<'a> {
    pub fn new() -> Self {
        Revert { undo: Vec::new() }
    }

    /// Registers how to undo the step just done.
    pub fn push(&mut self, what: &str, f: impl FnOnce() + 'a) {
        self.undo.push((what.to_string(), Box::new(f)));
    }

    /// Keeps everything: the work succeeded.
    pub fn disarm(mut self) {
        self.undo.clear();
    }
}

impl Default for Revert<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Revert<'_> {
    fn drop(&mut self) {
        while let Some((what, f)) = self.undo.pop() {
            tracing::debug!("reverting: {what}");
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn undoes_in_reverse_unless_disarmed() {
        let log = RefCell::new(Vec::new());
        {
            let mut r = Revert::new();
            r.push("a", || log.borrow_mut().push("a"));
            r.push("b", || log.borrow_mut().push("b"));
        }
        assert_eq!(*log.borrow(), vec!["b", "a"]);
        let mut r = Revert::new();
        r.push("c", || log.borrow_mut().push("c"));
        r.disarm();
        assert_eq!(log.borrow().len(), 2);
    }
}
