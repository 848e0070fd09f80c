//! `edgellm usage` and `edgellm audit`: read the ledger (spend per day against the caps, and the
//! audit log) from its file, also while a server owns it. They never write.

use std::path::PathBuf;

use anyhow::{Context, bail};
use jiff::Timestamp;

use crate::guard::budget::{Budget, Totals};
use crate::ledger::{DayUsage, Ledger, LedgerOptions};

/// The server's config file and data directory: the same sources `serve` uses.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The server's config file (for the caps, time zone and data directory)
    #[arg(long, env = "EDGELLM_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory holding ledger.sqlite3 [default: the config's, else $EDGELLM_HOME]
    #[arg(long, env = "EDGELLM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    /// The config file as written (an empty one when none is given), its `[budget]` checked,
    /// and the data directory.
    pub fn load(&self) -> anyhow::Result<(crate::config::RawConfig, Budget, PathBuf)> {
        let raw = match &self.config {
            Some(path) => crate::config::RawConfig::from_file(path)?,
            None => crate::config::RawConfig::default(),
        };
        let budget = raw
            .budget
            .validate()
            .map_err(|e| anyhow::anyhow!("[budget]: {e}"))?;
        let dir = self
            .data_dir
            .clone()
            .or_else(|| raw.server.data_dir.clone())
            .unwrap_or_else(crate::paths::home);
        Ok((raw, budget, dir))
    }
}

/// Where the ledger is and which caps apply.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    pub source: ConfigArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The day to show (YYYY-MM-DD in the budget's time zone) [default: today]
    #[arg(long)]
    pub day: Option<jiff::civil::Date>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// From this time (RFC 3339, e.g. 2026-11-25T00:00:00Z) [default: 24 hours ago]
    #[arg(long)]
    pub from: Option<Timestamp>,
    /// Up to (not including) this time [default: now]
    #[arg(long)]
    pub to: Option<Timestamp>,
    /// Most records to list (the JSON-lines export has no limit)
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

fn open(args: &LedgerArgs) -> anyhow::Result<(Ledger, Budget)> {
    open_with(args).map(|(ledger, budget, _)| (ledger, budget))
}

/// The ledger, the caps, and the daily download cap (`[delivery]`).
fn open_with(args: &LedgerArgs) -> anyhow::Result<(Ledger, Budget, Option<u64>)> {
    let (raw, budget, dir) = args.source.load()?;
    let path = dir.join(crate::ledger::FILE_NAME);
    if !path.exists() {
        bail!(
            "no ledger at {} (nothing has left the device yet, or --data-dir is wrong)",
            path.display()
        );
    }
    let ledger = Ledger::open_reader(&path, LedgerOptions::from_budget(&budget))
        .with_context(|| format!("cannot read the ledger {}", path.display()))?;
    Ok((ledger, budget, raw.delivery.daily_download_bytes))
}

pub fn usage(args: &UsageArgs) -> anyhow::Result<()> {
    let (ledger, budget, download_cap) = open_with(&args.ledger)?;
    let day = args.day.unwrap_or_else(|| ledger.day_of(Timestamp::now()));
    let usage = ledger.usage(day, &budget.caps)?;
    let downloaded = ledger.downloaded(day)?;
    if args.ledger.json {
        let mut answer = serde_json::to_value(&usage)?;
        answer["model_downloads"] = serde_json::json!({"bytes": downloaded, "cap": download_cap});
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", render_usage(&usage, &budget));
        println!(
            "model downloads: {downloaded} bytes{}",
            download_cap.map_or_else(String::new, |cap| format!(
                " of {cap} (delivery.daily_download_bytes)"
            ))
        );
    }
    Ok(())
}

/// One usage line: name, the amount it shows, its cap, what is left, whether it is money.
type UsageRow = (
    &'static str,
    fn(&Totals) -> u64,
    Option<u64>,
    Option<u64>,
    bool,
);

/// The usage table: what the caps count (settled at actual amounts, pending and in doubt at
/// reserved ones), each cap and what is left.
pub fn render_usage(usage: &DayUsage, budget: &Budget) -> String {
    let caps = &budget.caps;
    let rows: [UsageRow; 4] = [
        (
            "requests",
            |t| t.requests,
            caps.max_requests,
            usage.remaining.requests,
            false,
        ),
        (
            "input tokens",
            |t| t.input_tokens,
            caps.max_input_tokens,
            usage.remaining.input_tokens,
            false,
        ),
        (
            "output tokens",
            |t| t.output_tokens,
            caps.max_output_tokens,
            usage.remaining.output_tokens,
            false,
        ),
        (
            "cost (USD)",
            |t| t.cost_micros,
            caps.max_cost_micros,
            usage.remaining.cost_micros,
            true,
        ),
    ];
    let show = |value: u64, money: bool| {
        if money {
            format!("{:.6}", value as f64 / 1e6)
        } else {
            value.to_string()
        }
    };
    let mut out = format!(
        "day {} ({})\n{:<14} {:>12} {:>12} {:>12} {:>12} {:>12}\n",
        usage.day,
        budget.timezone.iana_name().unwrap_or("fixed offset"),
        "",
        "counted",
        "in doubt",
        "pending",
        "cap",
        "remaining"
    );
    for (name, get, cap, remaining, money) in rows {
        out.push_str(&format!(
            "{:<14} {:>12} {:>12} {:>12} {:>12} {:>12}\n",
            name,
            show(get(&usage.counted), money),
            show(get(&usage.in_doubt), money),
            show(get(&usage.pending), money),
            cap.map_or("-".into(), |c| show(c, money)),
            remaining.map_or("-".into(), |r| show(r, money)),
        ));
    }
    out
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<()> {
    let (ledger, _) = open(&args.ledger)?;
    let to = args.to.unwrap_or_else(Timestamp::now);
    let from = match args.from {
        Some(from) => from,
        None => to
            .checked_sub(jiff::SignedDuration::from_hours(24))
            .context("--to is too early")?,
    };
    if args.ledger.json {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        ledger.write_jsonl(&mut out, from, to)?;
        std::io::Write::flush(&mut out)?;
        return Ok(());
    }
    let entries = ledger.audit_list(from, to, args.limit)?;
    println!(
        "{:<24} {:<7} {:<12} {:<16} {:<18} {:>8} {:>8} {:>10}  redactions",
        "time", "kind", "tier", "reason", "outcome", "sent", "recv", "cost USD"
    );
    for entry in entries {
        let r = &entry.record;
        let redactions = r
            .redactions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<24} {:<7} {:<12} {:<16} {:<18} {:>8} {:>8} {:>10.6}  {}",
            r.time.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            serde_json::to_value(r.kind)?.as_str().unwrap_or(""),
            r.tier.as_deref().unwrap_or("-"),
            r.reason,
            r.outcome.to_string(),
            r.tokens_sent,
            r.tokens_received,
            r.cost_micros as f64 / 1e6,
            redactions
        );
    }
    Ok(())
}
