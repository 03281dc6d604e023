//! The steps' own notes ("the pending password logs in already"), to say what a step found.
//!
//! Only the `message` of INFO and WARN events of the rotation crates is kept: the engine writes
//! no value into a message, and the other fields (which may name users or hosts) are left out.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The notes collected since the last [`Notes::take`].
#[derive(Clone, Default)]
pub struct Notes(Arc<Mutex<Vec<String>>>);

impl Notes {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Collects notes from now on.
pub fn install() -> Notes {
    let notes = Notes::default();
    let _ = tracing_subscriber::registry().with(Collect(notes.clone())).try_init();
    notes
}

struct Collect(Notes);

fn from_rotation_crates(target: &str) -> bool {
    let root = target.split("::").next().unwrap_or_default();
    root == "rotation" || root.ends_with("_rotation")
}

impl<S: Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        if !(level == Level::INFO || level == Level::WARN) || !from_rotation_crates(event.metadata().target()) {
            return;
        }
        let mut message = Message(None);
        event.record(&mut message);
        if let Some(text) = message.0 {
            self.0.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
        }
    }
}

struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}
