//! The streams a command talks through, and what is known about them, so that tests can hand a
//! command buffers and scripted key presses instead of a terminal.

use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

/// A key press the job pager understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The next (older) page: `n`, `j`, space, → or Page Down.
    Next,
    /// The previous (newer) page: `p`, `k`, `b`, ← or Page Up.
    Previous,
    /// Leave the pager: `q`, Esc or Enter.
    Quit,
    /// Ctrl-C.
    Interrupt,
    /// Anything else.
    Other,
}

/// Reads single key presses from a terminal.
pub trait KeyReader: Send {
    /// Waits for the next key press.
    fn read_key(&mut self) -> io::Result<Key>;
}

/// The terminal's keys, read in raw mode one at a time.
#[derive(Debug, Default)]
pub struct TerminalKeys;

impl KeyReader for TerminalKeys {
    fn read_key(&mut self) -> io::Result<Key> {
        use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
        crossterm::terminal::enable_raw_mode()?;
        let key = loop {
            match event::read() {
                Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                    break Ok(match key.code {
                        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                            Key::Interrupt
                        }
                        KeyCode::Char('n' | 'j' | ' ') | KeyCode::Right | KeyCode::PageDown => {
                            Key::Next
                        }
                        KeyCode::Char('p' | 'k' | 'b') | KeyCode::Left | KeyCode::PageUp => {
                            Key::Previous
                        }
                        KeyCode::Char('q') | KeyCode::Esc | KeyCode::Enter => Key::Quit,
                        _ => Key::Other,
                    });
                }
                Ok(_) => {}
                Err(error) => break Err(error),
            }
        };
        crossterm::terminal::disable_raw_mode()?;
        key
    }
}

/// Standard input, output and error, and what kind of thing each one is.
pub struct Io {
    /// Where data goes.
    pub stdout: Box<dyn Write + Send>,
    /// Where messages, prompts and warnings go.
    pub stderr: Box<dyn Write + Send>,
    /// Where tokens and pasted codes come from.
    pub stdin: Box<dyn BufRead + Send>,
    /// Whether standard output is a terminal (a table) or not (tab-separated values).
    pub stdout_tty: bool,
    /// Whether standard error is a terminal (hints for people).
    pub stderr_tty: bool,
    /// Whether standard input is a terminal.
    pub stdin_tty: bool,
    /// Whether to colour what goes to a terminal (never with `NO_COLOR` or `TERM=dumb`).
    pub color: bool,
    /// The terminal's width in columns, when standard output is one.
    pub width: Option<u16>,
    /// Key presses for the pager, when standard input and output are a terminal.
    pub keys: Option<Box<dyn KeyReader>>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("stdout_tty", &self.stdout_tty)
            .field("stderr_tty", &self.stderr_tty)
            .field("stdin_tty", &self.stdin_tty)
            .field("color", &self.color)
            .field("width", &self.width)
            .field("keys", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether the environment allows colour: `NO_COLOR` unset or empty (no-color.org), and
/// `TERM` not `dumb`.
pub fn color_allowed(var: impl Fn(&str) -> Option<String>) -> bool {
    var("NO_COLOR").is_none_or(|v| v.is_empty()) && var("TERM").as_deref() != Some("dumb")
}

impl Io {
    /// The process's own streams.
    pub fn std() -> Self {
        let stdout_tty = io::stdout().is_terminal();
        let stdin_tty = io::stdin().is_terminal();
        let width = if stdout_tty {
            crossterm::terminal::size().ok().map(|(columns, _)| columns)
        } else {
            None
        };
        Self {
            stdout: Box::new(io::stdout()),
            stderr: Box::new(io::stderr()),
            stdin: Box::new(io::BufReader::new(io::stdin())),
            stdout_tty,
            stderr_tty: io::stderr().is_terminal(),
            stdin_tty,
            color: stdout_tty && color_allowed(|name| std::env::var(name).ok()),
            width,
            keys: (stdout_tty && stdin_tty).then(|| Box::new(TerminalKeys) as Box<dyn KeyReader>),
        }
    }

    /// Streams for a test: `stdin` as input, output captured in the returned buffers, nothing
    /// a terminal.
    pub fn captured(stdin: &str) -> (Self, Captured, Captured) {
        let out = Captured::default();
        let err = Captured::default();
        let io = Self {
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            stdin: Box::new(io::Cursor::new(stdin.as_bytes().to_vec())),
            stdout_tty: false,
            stderr_tty: false,
            stdin_tty: false,
            color: false,
            width: None,
            keys: None,
        };
        (io, out, err)
    }
}

/// An in-memory stream whose contents a test can read while a command still holds it.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Key presses from a list, for tests; `Quit` once the list is used up.
#[derive(Debug, Default)]
pub struct ScriptedKeys(pub std::collections::VecDeque<Key>);

impl KeyReader for ScriptedKeys {
    fn read_key(&mut self) -> io::Result<Key> {
        Ok(self.0.pop_front().unwrap_or(Key::Quit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_color_and_dumb_terminals_turn_colour_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(color_allowed(env(&[("TERM", "xterm-256color")])));
        assert!(color_allowed(env(&[("NO_COLOR", "")])));
        assert!(!color_allowed(env(&[("NO_COLOR", "1")])));
        assert!(!color_allowed(env(&[("TERM", "dumb")])));
    }
}
