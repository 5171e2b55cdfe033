//! Routing of incoming messages to consumers by topic filter.
//!
//! [`table::FilterTrie`] is the route table's data structure: matching costs grow with the
//! topic's depth, not with the number of routes.

pub mod table;
