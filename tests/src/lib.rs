//! Helpers shared by the end-to-end tests: starting and stopping the real binaries.
