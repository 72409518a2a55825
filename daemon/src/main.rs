//! The `gridwatch` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gridwatch::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Finds mining farms, tampered meters and abnormal loads in smart-meter telemetry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the daemon.
    Run {
        /// Configuration file.
        #[arg(long, default_value = "config/gridwatch.toml")]
        config: PathBuf,
    },
    /// Validates the configuration and compiles every rule; exits with 1 on any error.
    Check {
        /// Configuration file.
        #[arg(long, default_value = "config/gridwatch.toml")]
        config: PathBuf,
    },
    /// Streams a real data set as MQTT telemetry.
    Publish(gridwatch::publish::PublishArgs),
    /// Lists and requeues dead-lettered webhook deliveries and enables disabled webhooks; the
    /// daemon must be stopped.
    Webhooks(gridwatch::delivery::admin::WebhooksArgs),
    /// Lists, shows, acknowledges and resolves alerts through the running daemon's HTTP API.
    Alerts(gridwatch::api::client::AlertsArgs),
    /// Shows the running daemon's broker connection, store health, meters held, outbox depth,
    /// dead letters and webhooks, from /healthz, /metrics and the HTTP API.
    Status(gridwatch::api::client::StatusArgs),
    /// Inspects a WebAssembly detector plugin or tests it on recorded messages.
    Plugin(gridwatch::plugins::tool::PluginArgs),
    /// Shows what sample messages become with a device format or a Rhai decoder script.
    Decode(gridwatch::decode::tool::DecodeArgs),
    /// Runs rule test files: readings in, expected alerts out.
    Rules(gridwatch::rules::tool::RulesArgs),
    /// Exits with 0 when the running daemon's /healthz answers 200, for container health checks.
    Healthcheck(gridwatch::service::HealthcheckArgs),
    /// Adds known anomalies (mining, theft, tamper, benign look-alikes) to a real data set and
    /// writes the telemetry and its labels.
    Scenario(gridwatch::eval::scenario::ScenarioArgs),
    /// Runs the daemon's pipeline offline over recorded messages and writes the alerts.
    Replay(gridwatch::eval::replay::ReplayArgs),
    /// Compares a replay's alerts with a scenario's labels: precision, recall, F1, PR-AUC, time
    /// to detect and false alerts.
    Score(gridwatch::eval::score::ScoreArgs),
    /// Runs broker, daemon, publisher and webhook receiver together on bundled data.
    #[cfg(feature = "embedded-broker")]
    Demo(gridwatch::demo::DemoArgs),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Check { config } => check(&config),
        Command::Publish(args) => match runtime.block_on(gridwatch::publish::run(args)) {
            Ok(summary) => {
                println!("published {} readings", summary.total_readings());
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Webhooks(args) => webhooks(&args),
        Command::Alerts(args) => {
            let mut out = std::io::stdout().lock();
            match runtime.block_on(gridwatch::api::client::run_alerts(&args, &mut out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Status(args) => {
            let mut out = std::io::stdout().lock();
            match runtime.block_on(gridwatch::api::client::run_status(&args, &mut out)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Plugin(args) => {
            let mut out = std::io::stdout().lock();
            match gridwatch::plugins::tool::run(&args, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => fail(&error),
            }
        }
        Command::Scenario(args) => match gridwatch::eval::scenario::run(&args) {
            Ok(labels) => {
                println!(
                    "wrote {} labelled meters to {}",
                    labels.len(),
                    args.out.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Replay(args) => match gridwatch::eval::replay::run(&args) {
            Ok(summary) => {
                println!(
                    "replayed {} messages: {} readings accepted, {} rejected, {} alerts in {}",
                    summary.messages,
                    summary.accepted,
                    summary.rejected,
                    summary.alerts,
                    args.alerts.display()
                );
                if let Some(backtest) = &summary.backtest {
                    print!("{backtest}");
                }
                if summary.plugin_failures > 0 {
                    eprintln!(
                        "error: {} plugin calls failed, so their findings are missing from the \
                         alerts; the log names the plugin and cause of each",
                        summary.plugin_failures
                    );
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        },
        Command::Score(args) => {
            let mut out = std::io::stdout().lock();
            match gridwatch::eval::score::run(&args, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        Command::Healthcheck(args) => {
            match runtime.block_on(gridwatch::service::healthcheck(&args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rules(args) => {
            let mut out = std::io::stdout().lock();
            match gridwatch::rules::tool::run(&args, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => fail(&error),
            }
        }
        Command::Decode(args) => {
            let mut out = std::io::stdout().lock();
            match gridwatch::decode::tool::run(&args, &mut out) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(error) => fail(&error),
            }
        }
        #[cfg(feature = "embedded-broker")]
        Command::Demo(args) => match runtime.block_on(gridwatch::demo::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&*error),
        },
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    let mut message = format!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("{message}");
    ExitCode::FAILURE
}

async fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    let shutdown = async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    };
    match gridwatch::app::run(config, shutdown, |_| {}).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<gridwatch::app::StoreUnavailable>() => {
            eprintln!("error: {error:#}");
            ExitCode::from(gridwatch::app::EXIT_STORE_UNAVAILABLE as u8)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn webhooks(args: &gridwatch::delivery::admin::WebhooksArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match gridwatch::delivery::admin::run(args, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = u8::try_from(error.exit_code()).unwrap_or(1);
            fail(&error);
            ExitCode::from(code)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let (rules, plugins, decoder_problems, config_ok) = match Config::load(path) {
        Ok(config) => {
            let decoder_problems = gridwatch::decode::check(&config);
            (
                Some(config.rules),
                Some(config.plugins),
                decoder_problems,
                true,
            )
        }
        Err(error) => {
            eprintln!("error: {error}");
            (Config::load_rules_section(path), None, Vec::new(), false)
        }
    };
    let plugin_problems = plugins.as_ref().map(check_plugins).unwrap_or_default();
    let problems = rules
        .as_ref()
        .map(gridwatch::rules::check)
        .unwrap_or_default();
    for (i, problem) in problems.iter().enumerate() {
        if i == 0 {
            eprintln!("error: {} rule problem(s):", problems.len());
        }
        eprintln!("  {problem}");
    }
    for (i, problem) in plugin_problems.iter().enumerate() {
        if i == 0 {
            eprintln!("error: {} plugin problem(s):", plugin_problems.len());
        }
        eprintln!("  {problem}");
    }
    for (i, problem) in decoder_problems.iter().enumerate() {
        if i == 0 {
            eprintln!("error: {} decoder problem(s):", decoder_problems.len());
        }
        eprintln!("  {problem}");
    }
    let all_valid =
        problems.is_empty() && plugin_problems.is_empty() && decoder_problems.is_empty();
    if config_ok && all_valid {
        println!(
            "{}: configuration, rules, decoders and plugins are valid",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    ExitCode::FAILURE
}

/// Loads every plugin in the folder as the daemon would, without writing the compile cache.
fn check_plugins(config: &gridwatch::config::PluginsConfig) -> Vec<String> {
    let config = gridwatch::config::PluginsConfig {
        cache_dir: PathBuf::new(),
        ..config.clone()
    };
    let metrics = std::sync::Arc::new(gridwatch::metrics::Metrics::new());
    match gridwatch::plugins::PluginHost::start(&config, metrics) {
        Ok(host) => host.set().problems.clone(),
        Err(error) => vec![error.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Returns every option and positional argument without help text, as `command option`.
    fn undocumented(command: &clap::Command, path: &str) -> Vec<String> {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        let mut missing: Vec<String> = command
            .get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .filter(|arg| arg.get_help().is_none() && arg.get_long_help().is_none())
            .map(|arg| format!("{path} --{}", arg.get_id()))
            .collect();
        if command.get_about().is_none() {
            missing.push(format!("{path} (no description)"));
        }
        for sub in command.get_subcommands() {
            missing.extend(undocumented(sub, &path));
        }
        missing
    }

    #[test]
    fn every_command_and_option_has_help() {
        let command = Cli::command();
        command.clone().debug_assert();
        let missing = undocumented(&command, "");
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
