//! An external-process lambda: started by the broker for a `process` binding,
//! it attaches through the native client, upper-cases each value it is
//! upcalled with and emits it to the binding's destinations.
//!
//! A value starting with `fail` is reported as an error (the broker counts it).
//! Build: `cargo build -p kascade-wire --example process_lambda`; deploy with
//! `kascade lambda deploy upper --prefix /in --dest /out --process -- /path/to/process_lambda`.

use kascade_wire::native::LambdaClient;

fn main() {
    if let Err(e) = run() {
        eprintln!("process_lambda: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), kascade_wire::native::NativeError> {
    let mut lambda = LambdaClient::attach_from_env()?;
    eprintln!(
        "process_lambda: attached to {} on {}",
        lambda.name(),
        lambda.prefix()
    );
    while let Some(upcall) = lambda.next_upcall(None)? {
        if upcall.value.starts_with(b"fail") {
            lambda.done(&upcall, Err("the value asked to fail"))?;
            continue;
        }
        let upper = upcall.value.to_ascii_uppercase();
        match lambda.emit(&upcall, &upper) {
            Ok(()) => lambda.done(&upcall, Ok(()))?,
            Err(e) => lambda.done(&upcall, Err(&e.to_string()))?,
        }
    }
    Ok(())
}
