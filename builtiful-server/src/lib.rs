//! The Builtiful server.
