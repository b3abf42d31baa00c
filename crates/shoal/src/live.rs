//! The configuration in force, swapped whole on reload. Typed sections are parsed from each
//! new configuration before it is installed, so a handler sees the old configuration or the
//! new one, never a mix, and never one that failed to parse.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::de::DeserializeOwned;

use crate::config::{Config, ConfigError};

type Section = Arc<dyn Any + Send + Sync>;
type Parser = Box<dyn Fn(&Config) -> Result<Section, ConfigError> + Send + Sync>;

/// A configuration and every registered section parsed from it.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub(crate) config: Config,
    sections: Vec<Section>,
}

/// Holds the snapshot in force and knows how to parse the next.
pub(crate) struct ConfigCell {
    current: RwLock<Arc<Snapshot>>,
    parsers: Mutex<Vec<Parser>>,
}

impl std::fmt::Debug for ConfigCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCell")
            .field("config", &self.snapshot().config)
            .finish()
    }
}

impl ConfigCell {
    pub(crate) fn new(config: Config) -> ConfigCell {
        ConfigCell {
            current: RwLock::new(Arc::new(Snapshot {
                config,
                sections: Vec::new(),
            })),
            parsers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers section `name` as type `T`, parsing it from the configuration in force.
    pub(crate) fn register<T>(self: &Arc<Self>, name: &str) -> Result<Live<T>, ConfigError>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let owned = name.to_owned();
        let parser: Parser = Box::new(move |config: &Config| {
            config
                .section::<T>(&owned)
                .map(|value| Arc::new(value) as Section)
        });
        let mut parsers = self.parsers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let value = parser(&current.config)?;
        let mut next = Snapshot::clone(&current);
        next.sections.push(value);
        let index = next.sections.len() - 1;
        *current = Arc::new(next);
        parsers.push(parser);
        Ok(Live {
            cell: self.clone(),
            index,
            _type: PhantomData,
        })
    }

    /// Parses every registered section from `config`; the first failure rejects it whole.
    pub(crate) fn prepare(&self, config: Config) -> Result<Snapshot, ConfigError> {
        let parsers = self.parsers.lock().unwrap_or_else(PoisonError::into_inner);
        let sections = parsers
            .iter()
            .map(|parse| parse(&config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { config, sections })
    }

    /// Puts a prepared snapshot in force, in one step.
    pub(crate) fn install(&self, snapshot: Snapshot) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }
}

/// A typed configuration section that follows reloads: [`Live::get`] returns the value in
/// force now. Clones are cheap and share the cell.
pub struct Live<T> {
    cell: Arc<ConfigCell>,
    index: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live {
            cell: self.cell.clone(),
            index: self.index,
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Live<T> {
    /// The section as the configuration in force has it.
    pub fn get(&self) -> Arc<T> {
        let snapshot = self.cell.snapshot();
        snapshot.sections[self.index]
            .clone()
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("section {} registered with another type", self.index))
    }
}
