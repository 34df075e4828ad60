//! The progress bar of the long runs: `regmig demo` (migrations), `regmig sim fuzz` (seeds),
//! `regmig bench` (sections, kills).
//!
//! The bar is drawn on stderr, and only when stderr is a terminal (indicatif's own check) and
//! the command prints no `--json`; otherwise it is hidden and draws nothing, so a piped
//! stderr holds no carriage returns or escape codes. Lines for stdout go through
//! [`Progress::println`], which clears the bar while it writes, so stdout is the same
//! whether a bar is drawn or not.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a drawn bar is redrawn while nothing advances it (its elapsed time moves on).
const STEADY_TICK_MS: u64 = 200;

/// A progress bar counting one unit of a run; hidden when it must not be drawn.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar counting `unit` ("migrations", "seeds", "sections"), drawn on stderr when stderr
    /// is a terminal and `json` is false; hidden otherwise.
    pub fn new(unit: &str, json: bool) -> Progress {
        Progress::with_target(unit, draw_target(json))
    }

    fn with_target(unit: &str, target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        // `unit` is a fixed word of ours; a template that does not parse falls back to
        // indicatif's plain bar rather than failing the run. The bar takes what the terminal's
        // width leaves, so the line never wraps (a wrapped bar is redrawn as two lines).
        let template =
            format!("[{{elapsed_precise}}] {{msg}} [{{wide_bar}}] {{pos}}/{{len}} {unit}");
        bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(STEADY_TICK_MS));
        }
        Progress { bar }
    }

    /// Whether the bar draws nothing (stderr is not a terminal, or `--json`).
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Starts counting `len` units of a new stage, labelled `message`, from zero.
    pub fn start(&self, message: impl Into<String>, len: u64) {
        self.bar.set_position(0);
        self.bar.set_length(len);
        self.bar.set_message(message.into());
    }

    /// Labels what the bar counts now, keeping its count.
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Counts one more unit done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Prints `line` on stdout; a drawn bar is cleared while it is written and drawn again
    /// below it.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Prints `line` on stderr: above a drawn bar, or as a plain line when the bar is hidden.
    pub fn eprintln(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar: the run is over.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Leaves the bar as drawn (the run was interrupted) and stops redrawing it.
    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

/// Where a bar draws: nowhere with `--json`, else stderr, which indicatif hides itself when
/// stderr is not a terminal.
fn draw_target(json: bool) -> ProgressDrawTarget {
    if json {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

#[cfg(test)]
mod tests {
    use std::io::IsTerminal;
    use std::sync::{Arc, Mutex};

    use indicatif::{ProgressDrawTarget, TermLike};

    use super::{draw_target, Progress};

    /// A terminal that keeps what is written to it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn text(&self) -> String {
            self.0.lock().map(|text| text.clone()).unwrap_or_default()
        }
        fn write(&self, text: &str) -> std::io::Result<()> {
            if let Ok(mut screen) = self.0.lock() {
                screen.push_str(text);
            }
            Ok(())
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, line: &str) -> std::io::Result<()> {
            self.write(line)?;
            self.write("\n")
        }
        fn write_str(&self, text: &str) -> std::io::Result<()> {
            self.write(text)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.write("\r")
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_hides_the_bar_whatever_stderr_is() {
        assert!(draw_target(true).is_hidden());
        assert!(Progress::new("seeds", true).is_hidden());
    }

    #[test]
    fn without_json_the_bar_is_drawn_exactly_when_stderr_is_a_terminal() {
        assert_eq!(
            draw_target(false).is_hidden(),
            !std::io::stderr().is_terminal()
        );
    }

    #[test]
    fn a_drawn_bar_counts_in_the_unit_of_the_run_and_its_lines_go_above_it() {
        let screen = Screen::default();
        let progress = Progress::with_target(
            "seeds",
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        assert!(!progress.is_hidden());
        progress.start("fuzzing", 3);
        progress.inc();
        progress.inc();
        progress.eprintln("seed 1 FAILED");
        let drawn = screen.text();
        assert!(drawn.contains("2/3 seeds"), "{drawn:?}");
        assert!(drawn.contains("fuzzing"), "{drawn:?}");
        assert!(drawn.contains("seed 1 FAILED\n"), "{drawn:?}");
        progress.finish();
    }
}
