//! Unit tests of the plugin's pure parts, by concern: what --from/--to/--*-mode accept, a
//! NetworkFault from flags (errors naming the flag), apply's documents and the tables.

mod build;
mod docs;
mod parse;
