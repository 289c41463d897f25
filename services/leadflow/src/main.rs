//! The `leadflow` binary: parses the command line, loads the settings, starts telemetry
//! and runs the chosen subcommand.

use std::process::ExitCode;

use clap::Parser;
use leadflow::{
    Application, bench,
    cli::{Cli, Command, EventsCommand, LeadCommand, RepsCommand, ServeArgs},
    console, demo,
};
use leadflow_platform::{Settings, shutdown_signal, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if is_console(&cli.command) {
        return run_console(&cli.command);
    }
    let loaded = match &cli.command {
        Command::Serve(args) => Settings::load(cli.config.as_deref(), args),
        Command::Migrate(args) => Settings::load(cli.config.as_deref(), &args.backends),
        Command::Events(args) => Settings::load(cli.config.as_deref(), args.backends()),
        _ => Ok(Settings::default()),
    };
    let log_format = match &cli.command {
        Command::Serve(args) => args.backends.log_format,
        Command::Migrate(args) => args.backends.log_format,
        Command::Events(args) => args.backends().log_format,
        _ => None,
    };
    let mut settings = match loaded {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = log_format {
        settings.log.format = format;
    }
    if let Command::Serve(args) = &cli.command
        && let Some(listen) = args.ingress_listen
    {
        settings.ingress.listen = listen;
    }
    // Each service of a deployment reports under its own name, e.g. leadflow-scoring.
    let service_name = match &cli.command {
        Command::Serve(ServeArgs {
            service: Some(kind),
            ..
        }) => format!("leadflow-{}", kind.schema()),
        _ => "leadflow".to_owned(),
    };
    let runtime = match start_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // The OTLP exporters (tonic channels) need the runtime's reactor when they are built;
    // the guard is dropped, flushing them, while the runtime still runs.
    let _in_runtime = runtime.enter();
    let _telemetry = match start_telemetry(&service_name, &settings.log) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        match &cli.command {
            Command::Serve(args) => {
                let application = Application::build(&settings, &args.services()).await?;
                application.run_until(shutdown_signal()).await
            }
            Command::Migrate(args) => leadflow::migrate(&settings, &args.services()).await,
            Command::Events(args) => match args.command {
                EventsCommand::Lag(_) => {
                    let report = leadflow::events_lag(&settings).await?;
                    print_lag(&report);
                    Ok(())
                }
                EventsCommand::DeadLetters(ref dead) => {
                    let letters = leadflow::dead_letters(&settings, dead.limit).await?;
                    print_dead_letters(&letters);
                    Ok(())
                }
            },
            _ => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ leadflow::AppError::Configuration(_)) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            // Collectors read the log; a person at a terminal reads stderr.
            tracing::error!(%error, "stopped");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime, or the exit code of a machine that cannot give one.
fn start_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        })
}

/// Logs and telemetry for `service_name`, or the exit code of a bad configuration.
fn start_telemetry(
    service_name: &str,
    log: &leadflow_platform::LogSettings,
) -> Result<telemetry::TelemetryGuard, ExitCode> {
    telemetry::init(service_name, log).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

/// Whether the command is one of the console's, which print to standard output and log
/// only warnings, to standard error.
fn is_console(command: &Command) -> bool {
    matches!(
        command,
        Command::Demo(_)
            | Command::Import(_)
            | Command::Lead(_)
            | Command::Reps(_)
            | Command::Report(_)
            | Command::Bench(_)
    )
}

/// Runs a console command or the demo.
fn run_console(command: &Command) -> ExitCode {
    let log = leadflow_platform::LogSettings {
        filter: "warn".to_owned(),
        to_stderr: true,
        ..Default::default()
    };
    let runtime = match start_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let _in_runtime = runtime.enter();
    let _telemetry = match start_telemetry("leadflow", &log) {
        Ok(guard) => guard,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Demo(args) => demo::run(args).await,
            Command::Import(args) => console::import::run(args).await,
            Command::Lead(args) => match &args.command {
                LeadCommand::Show(show) => console::lead::show(show).await,
            },
            Command::Reps(args) => match &args.command {
                RepsCommand::List(list) => console::reps::list(list).await,
            },
            Command::Report(args) => console::report::run(&args.command).await,
            Command::Bench(args) if args.empty_server => bench::serve_empty_capture()
                .await
                .map_err(|error| console::ConsoleError::Input(error.to_string())),
            Command::Bench(args) => bench::run(args)
                .await
                .map_err(|error| console::ConsoleError::Input(error.to_string())),
            _ => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the lag report as a table, one row per stream and group.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
fn print_lag(report: &[leadflow_bus::GroupLag]) {
    if report.is_empty() {
        println!("no consumer groups yet");
        return;
    }
    println!(
        "{:<40} {:<12} {:>9} {:>16} {:>12} {:>13}",
        "STREAM", "GROUP", "PENDING", "OLDEST PENDING", "UNDELIVERED", "DEAD-LETTERED"
    );
    for lag in report {
        println!(
            "{:<40} {:<12} {:>9} {:>15.1}s {:>12} {:>13}",
            lag.stream,
            lag.group,
            lag.pending,
            lag.oldest_pending_idle.as_secs_f64(),
            lag.undelivered
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            lag.dead_lettered,
        );
    }
}

/// Prints dead-lettered events as a table, one row per event.
#[allow(clippy::print_stdout, reason = "the listing is the command's output")]
fn print_dead_letters(letters: &[leadflow_bus::DeadLetter]) {
    if letters.is_empty() {
        println!("no dead-lettered events");
        return;
    }
    println!(
        "{:<12} {:<18} {:<38} {:<32} ERROR",
        "GROUP", "ENTRY", "EVENT", "FROM STREAM"
    );
    for letter in letters {
        println!(
            "{:<12} {:<18} {:<38} {:<32} {}",
            letter.group, letter.entry_id, letter.event_id, letter.stream, letter.error
        );
    }
}
