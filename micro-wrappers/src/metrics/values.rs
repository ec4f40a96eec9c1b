//! The values one label may take: the known ones, then the first [`MAX_VALUES`] others; past
//! those, every new value folds into [`OTHER`], so a peer sending random names cannot grow
//! the registry.

use std::{collections::HashMap, sync::Arc};

use parking_lot::RwLock;

use super::{MAX_VALUES, OTHER};

/// The values of one label. Read when a (service, endpoint) is first seen, never per call.
#[derive(Debug, Default)]
pub(crate) struct Values {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every value kept, and whether it was known (those do not count against the bound).
    kept: HashMap<Arc<str>, bool, foldhash::fast::RandomState>,
    /// Values kept that were not known.
    seen: usize,
}

impl Values {
    /// Keeps `value` whatever the bound (a hosted service, an endpoint of its descriptors, a
    /// service of the registry).
    pub(crate) fn know(&self, value: &str) {
        let mut inner = self.inner.write();
        match inner.kept.get_mut(value) {
            Some(known) if !*known => {
                *known = true;
                inner.seen -= 1;
            }
            Some(_) => {}
            None => {
                inner.kept.insert(value.into(), true);
            }
        }
    }

    /// `value` as kept (the shared string), if it is.
    pub(crate) fn get(&self, value: &str) -> Option<Arc<str>> {
        self.inner
            .read()
            .kept
            .get_key_value(value)
            .map(|(kept, _)| kept.clone())
    }

    /// `value` as exported: itself if known (or `known` says so, asked only past the bound)
    /// or among the first [`MAX_VALUES`] seen, else `None` (it folds into [`OTHER`]).
    pub(crate) fn admit(
        &self,
        value: &Arc<str>,
        known: Option<&(dyn Fn(&str) -> bool + Send + Sync)>,
    ) -> Option<Arc<str>> {
        if &**value == OTHER {
            return None;
        }
        if let Some(kept) = self.get(value) {
            return Some(kept);
        }
        let mut inner = self.inner.write();
        if let Some((kept, _)) = inner.kept.get_key_value(&**value) {
            return Some(kept.clone());
        }
        if inner.seen >= MAX_VALUES {
            if known.is_some_and(|known| known(value)) {
                inner.kept.insert(value.clone(), true);
                return Some(value.clone());
            }
            return None;
        }
        inner.seen += 1;
        inner.kept.insert(value.clone(), false);
        Some(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_do_not_count_against_the_bound() {
        let values = Values::default();
        values.know("greeter");
        for i in 0..MAX_VALUES {
            let value: Arc<str> = format!("v{i}").into();
            assert_eq!(values.admit(&value, None).as_deref(), Some(&*value));
        }
        assert_eq!(values.admit(&"late".into(), None), None);
        assert_eq!(
            values.admit(&"greeter".into(), None).as_deref(),
            Some("greeter")
        );
        assert_eq!(values.admit(&"v3".into(), None).as_deref(), Some("v3"));
        values.know("late");
        assert_eq!(values.admit(&"late".into(), None).as_deref(), Some("late"));
        let registry = |value: &str| value == "found";
        assert_eq!(values.admit(&"lost".into(), Some(&registry)), None);
        assert_eq!(
            values.admit(&"found".into(), Some(&registry)).as_deref(),
            Some("found")
        );
        assert_eq!(values.admit(&OTHER.into(), None), None);
    }
}
