//! Hostile inputs: what anyone who can write a drop folder, any server the daemon talks
//! to, or any client of the metrics port may send. Each test drives the real binary or a
//! public interface against real files and loopback servers, and proves the daemon
//! neither leaks, crashes, freezes nor grows without bound.

mod answers;
mod folders;
mod listener;
