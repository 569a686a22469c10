//! Ember compiler.
