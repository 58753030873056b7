//! Unit tests of the Kubernetes module, by concern: the CRD and its schema, validation, and
//! resolution into node-level faults (objects from `super::fixture`).

mod resolve;
mod schema;
mod select;
mod service;
mod validate;
