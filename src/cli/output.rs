//! Standard output that fails loudly: a write error (a full disk, `> /dev/full`) makes the
//! command exit 1 with the error named, since output that was lost must not look like
//! success. A closed pipe (`regmig list | head`) is the one exception: the process ends
//! quietly, as Unix tools do.

use std::io::Write;
use std::sync::Mutex;

/// The first error writing stdout, if any.
static OUTPUT_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// The start of the message of the panic `println!` raises when stdout cannot be written.
const PRINT_PANIC_PREFIX: &str = "failed printing to stdout";

fn record(error: String) {
    let mut slot = OUTPUT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.get_or_insert(error);
}

/// Writes `text` to stdout and flushes it; an error is remembered for [`output_error`].
pub fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        record(error.to_string());
    }
}

/// The first error writing stdout, if any.
pub fn output_error() -> Option<String> {
    OUTPUT_ERROR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Sets up the process: a closed pipe ends it quietly (the default action of SIGPIPE, which
/// the Rust runtime ignores), and a `println!` that cannot write stdout exits 1 with the
/// error instead of a panic's backtrace.
pub fn install() {
    // SAFETY: restoring the default disposition of a signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied());
        if let Some(message) = payload.filter(|message| message.starts_with(PRINT_PANIC_PREFIX)) {
            let error = message
                .strip_prefix(PRINT_PANIC_PREFIX)
                .unwrap_or(message)
                .trim_start_matches(':')
                .trim();
            eprintln!("error: cannot write the output to stdout: {error}");
            std::process::exit(i32::from(super::EXIT_FAILED));
        }
        default_hook(info);
    }));
}

/// The exit code after a command returned `code`: 1 when its output could not be written.
pub fn final_exit_code(code: u8) -> u8 {
    // Whatever is still buffered must reach the file too.
    if let Err(error) = std::io::stdout().lock().flush() {
        record(error.to_string());
    }
    match output_error() {
        Some(error) if code == 0 => {
            eprintln!("error: cannot write the output to stdout: {error}");
            super::EXIT_FAILED
        }
        _ => code,
    }
}
