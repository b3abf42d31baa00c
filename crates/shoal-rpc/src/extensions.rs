//! Values a server shares with every call, found by their type: a database pool, a cache, the
//! service's configuration. Handlers read them through [`crate::Context::state`].

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// A map from a type to the one shared value of that type.
///
/// Built once (through [`crate::ServerBuilder::state`]) and read by every call: cloning it
/// copies a pointer, and an empty map allocates nothing, so a [`crate::Context`] carries it
/// at no cost.
#[derive(Clone, Default)]
pub struct Extensions {
    entries: Option<Arc<Vec<Entry>>>,
}

#[derive(Clone)]
struct Entry {
    id: TypeId,
    /// For `Debug`: a `TypeId` prints as a number.
    name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
}

impl Extensions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` as the one value of type `T`, replacing any earlier one.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Stores a value that is already shared elsewhere (the caller keeps its own handle).
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.put(Entry {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
            value,
        });
    }

    /// Stores a value whose type is known only at run time (state collected by type
    /// elsewhere); it is found as the concrete type inside the `Arc`.
    pub fn insert_any(&mut self, value: Arc<dyn Any + Send + Sync>) {
        self.put(Entry {
            // The type of the value inside, not of the `Arc`.
            id: (*value).type_id(),
            name: "(type-erased)",
            value,
        });
    }

    fn put(&mut self, entry: Entry) {
        // Copies the list only if a clone of this map is already shared (a started server):
        // adding state is a build-time step.
        let entries = Arc::make_mut(self.entries.get_or_insert_with(Default::default));
        match entries.iter_mut().find(|e| e.id == entry.id) {
            Some(slot) => *slot = entry,
            None => entries.push(entry),
        }
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.find::<T>()?.value.downcast_ref()
    }

    /// The value of type `T` as a shared handle, for keeping past the call.
    pub fn get_arc<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.find::<T>()?.value.clone().downcast().ok()
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A server holds a handful of types: comparing a few `TypeId`s in a list is quicker
    /// than hashing one, and this runs on calls, not at build time.
    fn find<T: 'static>(&self) -> Option<&Entry> {
        let id = TypeId::of::<T>();
        self.entries.as_ref()?.iter().find(|e| e.id == id)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.entries.iter().flat_map(|e| e.iter().map(|e| e.name));
        f.debug_set().entries(names).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Db(&'static str);

    #[test]
    fn values_are_found_by_type_and_replaced_by_type() {
        let mut ext = Extensions::new();
        assert!(ext.is_empty() && ext.get::<Db>().is_none());
        ext.insert(Db("first"));
        ext.insert(7u32);
        ext.insert(Db("second"));
        assert_eq!(ext.len(), 2);
        assert_eq!(ext.get::<Db>(), Some(&Db("second")));
        assert_eq!(ext.get_arc::<u32>().as_deref(), Some(&7));
        assert!(ext.get::<u64>().is_none());
        assert!(format!("{ext:?}").contains("Db"), "{ext:?}");
    }

    #[test]
    fn a_type_erased_value_is_found_as_its_concrete_type() {
        let mut ext = Extensions::new();
        let erased: Arc<dyn Any + Send + Sync> = Arc::new(Db("erased"));
        ext.insert_any(erased);
        assert_eq!(ext.get::<Db>(), Some(&Db("erased")));
        ext.insert(Db("typed"));
        assert_eq!((ext.len(), ext.get::<Db>()), (1, Some(&Db("typed"))));
    }

    #[test]
    fn clones_share_values_and_later_inserts_do_not_leak_into_them() {
        let shared = Arc::new(Db("pool"));
        let mut ext = Extensions::new();
        ext.insert_arc(shared.clone());
        let copy = ext.clone();
        assert!(Arc::ptr_eq(&copy.get_arc::<Db>().unwrap(), &shared));
        ext.insert(1u8);
        assert!(copy.get::<u8>().is_none());
        assert_eq!(ext.get::<u8>(), Some(&1));
    }
}
