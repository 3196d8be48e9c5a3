//! Integration tests: the real binary, real files, real third-party peers on 127.0.0.1.
//! All in one test binary (as ripgrep does) so they share one build.

mod delta;
mod deploy;
mod host;
mod hostile;
mod interop;
mod layers;
mod learn;
mod mount;
mod protocol;
mod publish;
mod scale;
mod support;
mod trust;
