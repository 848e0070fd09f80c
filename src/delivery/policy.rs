//! `[delivery]`: which links a model pull may use and how many bytes a day it may fetch, and
//! the audit rows every delivery step leaves in the ledger (`kind = model`).
//!
//! The network gate judges the interface the registry is reached through: the route the kernel
//! gives for the registry's addresses (asked as `ip route get` asks, so policy routing applies;
//! a configured `/proc` tree is read as the main table: longest prefix, then lowest metric),
//! else the default route, read as the egress guard reads it (`crate::netstate`, the `[network]`
//! section's roots and metered interfaces). A pull is refused when that link is of a kind not
//! allowed (cellular and tunnels are not by default), not in `allowed_interfaces`, or metered
//! while `allow_metered` is off. A registry on the device itself (loopback, or an address of
//! its own) uses no link and is not judged. A device with no route at all is not refused: whatever
//! registry it reaches is on its own network, and a registry it cannot reach fails the pull by
//! itself.

use serde::Deserialize;

use crate::guard::network::{self, InterfaceKind, NetworkPolicy, Refusal};
use crate::ledger::{AuditKind, AuditRecord, Ledger, LedgerOptions, Outcome};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryPolicy {
    /// Kinds of link the default route may be on while a pull runs (default: ethernet, wifi).
    pub allowed_kinds: Vec<InterfaceKind>,
    /// Interface names the default route may use; empty means any.
    pub allowed_interfaces: Vec<String>,
    /// Pull over a metered link (every cellular one, and `network.metered_interfaces`).
    pub allow_metered: bool,
    /// Bytes pulls may fetch per budget day (the `[budget]` time zone); none: no cap.
    pub daily_download_bytes: Option<u64>,
    /// Registry credentials: a Docker `config.json` (`crate::delivery::auth`).
    pub registry_auth: Option<std::path::PathBuf>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            allowed_kinds: vec![InterfaceKind::Ethernet, InterfaceKind::Wifi],
            allowed_interfaces: Vec::new(),
            allow_metered: false,
            daily_download_bytes: None,
            registry_auth: None,
        }
    }
}

impl DeliveryPolicy {
    /// Whether a pull from a registry at `registry` (its addresses; empty when it did not
    /// resolve) may start on the network as `network`'s roots show it now.
    pub fn check_network(
        &self,
        network: &NetworkPolicy,
        registry: &[std::net::IpAddr],
    ) -> Result<(), Refusal> {
        let gate = NetworkPolicy {
            opt_in: true,
            allowed_interfaces: self.allowed_interfaces.clone(),
            allowed_kinds: self.allowed_kinds.clone(),
            deny_metered: !self.allow_metered,
            metered_interfaces: network.metered_interfaces.clone(),
            sys_root: network.sys_root.clone(),
            proc_root: network.proc_root.clone(),
        };
        // A registry on this device (a local cache, a mirror on loopback) uses no link.
        let Some(state) = crate::netstate::read_toward(&gate.proc_root, &gate.sys_root, registry)
        else {
            return Ok(());
        };
        match network::check_network(&gate, &state) {
            Err(Refusal::Offline) => Ok(()),
            other => other,
        }
    }
}

/// One delivery step for the audit log: `step` is `pull`, `activate`, `rollback`,
/// `auto_rollback` or `gc`; `model` the reference or file it concerns; `source` the registry a
/// pull reads.
pub fn audit_record(
    step: &str,
    model: &str,
    source: Option<&str>,
    outcome: Outcome,
) -> AuditRecord {
    AuditRecord {
        time: jiff::Timestamp::now(),
        kind: AuditKind::Model,
        request_id: format!("model-{}", uuid::Uuid::new_v4().simple()),
        tier: source.map(str::to_string),
        model: Some(model.to_string()),
        reason: step.to_string(),
        redactions: Default::default(),
        bytes_sent: 0,
        bytes_received: 0,
        tokens_sent: 0,
        tokens_received: 0,
        cost_micros: 0,
        outcome,
        detail: None,
        sources: Vec::new(),
    }
}

/// How an audit row names a model file: its file name.
pub fn file_label(path: &std::path::Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The ledger in `data_dir`, opened to append delivery rows beside a server that may own it.
pub fn open_ledger(data_dir: &std::path::Path, options: LedgerOptions) -> anyhow::Result<Ledger> {
    let path = data_dir.join(crate::ledger::FILE_NAME);
    Ledger::open_appender(&path, options).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the ledger {} for the audit log and the download budget: {e}",
            path.display()
        )
    })
}

/// Appends `record` to the ledger in `data_dir` (for `serve`, whose steps must not stop on
/// the audit log: a failure is logged).
pub fn record_in(data_dir: &std::path::Path, options: LedgerOptions, record: &AuditRecord) {
    let written = open_ledger(data_dir, options).and_then(|l| Ok(l.record_audit(record)?));
    if let Err(error) = written {
        tracing::warn!(error = format!("{error:#}"), step = %record.reason, "cannot write the audit row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_use_wired_and_wifi_links_unless_told_otherwise() {
        use crate::netstate::fake::{Tree, route_line};
        let trees = std::cell::RefCell::new(Vec::new());
        // The default route on `iface` (up), with these sysfs files; `metered` names metered
        // interfaces in [network].
        let network = |iface: Option<&str>, files: &[(&str, Option<&str>)], metered: &[&str]| {
            let tree = Tree::new();
            let routes: Vec<String> = iface
                .map(|name| route_line(name, "00000000", "0003", 0))
                .into_iter()
                .collect();
            tree.routes(&routes);
            if let Some(name) = iface {
                tree.iface(name, files);
            }
            let policy = NetworkPolicy {
                metered_interfaces: metered.iter().map(|s| s.to_string()).collect(),
                sys_root: tree.sys_root(),
                proc_root: tree.proc_root(),
                ..NetworkPolicy::default()
            };
            trees.borrow_mut().push(tree);
            policy
        };
        let wired: &[(&str, Option<&str>)] = &[("operstate", Some("up\n")), ("type", Some("1\n"))];
        let wifi: &[(&str, Option<&str>)] = &[
            ("operstate", Some("up\n")),
            ("type", Some("1\n")),
            ("wireless", None),
        ];
        let modem: &[(&str, Option<&str>)] =
            &[("operstate", Some("up\n")), ("type", Some("519\n"))];

        let default = DeliveryPolicy::default();
        assert_eq!(
            default.check_network(&network(Some("eth0"), wired, &[]), &[]),
            Ok(())
        );
        assert_eq!(
            default.check_network(&network(Some("wlan0"), wifi, &[]), &[]),
            Ok(())
        );
        // No default route: a registry on the device's own network is still reachable.
        assert_eq!(
            default.check_network(&network(None, wired, &[]), &[]),
            Ok(())
        );
        let cellular = network(Some("wwan0"), modem, &[]);
        assert_eq!(
            default.check_network(&cellular, &[]).unwrap_err().reason(),
            "network_kind"
        );
        // Judged by the kernel's own route (the real /proc), links described by a sysfs tree
        // in which this machine's outgoing interface is a modem: a registry on the device
        // itself (a local mirror) uses no link; one outside is judged by that interface.
        let outside: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        if let Some(crate::netstate::route_get::KernelRoute::Interface(name)) =
            crate::netstate::route_get::route_to(outside)
        {
            let tree = Tree::new();
            tree.iface(&name, modem);
            let real = NetworkPolicy {
                sys_root: tree.sys_root(),
                ..NetworkPolicy::default()
            };
            for local in ["127.0.0.1", "::1", "127.3.2.1"] {
                assert_eq!(
                    default.check_network(&real, &[local.parse().unwrap()]),
                    Ok(()),
                    "{local}"
                );
            }
            let refused = default.check_network(&real, &[outside]).unwrap_err();
            assert_eq!(refused.reason(), "network_kind");
            assert!(refused.to_string().contains(&name), "{refused}");
            assert_eq!(
                default
                    .check_network(&real, &["127.0.0.1".parse().unwrap(), outside])
                    .unwrap_err()
                    .reason(),
                "network_kind",
                "one address off the device is judged"
            );
            trees.borrow_mut().push(tree);
        } else {
            panic!("this machine has no route to {outside}: the test needs a default route");
        }
        // A tree of files is judged by its tables alone, loopback included.
        assert_eq!(
            default
                .check_network(&cellular, &["127.0.0.1".parse().unwrap()])
                .unwrap_err()
                .reason(),
            "network_kind"
        );
        let with_cellular = DeliveryPolicy {
            allowed_kinds: vec![InterfaceKind::Ethernet, InterfaceKind::Cellular],
            ..DeliveryPolicy::default()
        };
        assert_eq!(
            with_cellular
                .check_network(&cellular, &[])
                .unwrap_err()
                .reason(),
            "metered"
        );
        // The default route on the modem, the registry on the wired LAN: judged by the LAN's
        // link. A registry out on the internet is still judged by the modem's.
        let lan = Tree::new();
        lan.routes(&[
            route_line("wwan0", "00000000", "0003", 0),
            crate::netstate::fake::masked_route_line("eth0", "0001A8C0", "00FFFFFF", "0001", 100),
        ])
        .iface("wwan0", modem)
        .iface("eth0", wired);
        let lan_policy = NetworkPolicy {
            sys_root: lan.sys_root(),
            proc_root: lan.proc_root(),
            ..NetworkPolicy::default()
        };
        assert_eq!(
            default.check_network(&lan_policy, &["192.168.1.20".parse().unwrap()]),
            Ok(())
        );
        assert_eq!(
            default
                .check_network(&lan_policy, &["203.0.113.7".parse().unwrap()])
                .unwrap_err()
                .reason(),
            "network_kind"
        );
        let metered_ok = DeliveryPolicy {
            allow_metered: true,
            ..with_cellular.clone()
        };
        assert_eq!(metered_ok.check_network(&cellular, &[]), Ok(()));
        // A tethered phone that looks like ethernet, named metered in [network].
        let usb = network(Some("usb0"), wired, &["usb0"]);
        assert_eq!(
            default.check_network(&usb, &[]).unwrap_err().reason(),
            "metered"
        );
        let only_eth1 = DeliveryPolicy {
            allowed_interfaces: vec!["eth1".into()],
            ..DeliveryPolicy::default()
        };
        assert_eq!(
            only_eth1
                .check_network(&network(Some("eth0"), wired, &[]), &[])
                .unwrap_err()
                .reason(),
            "interface"
        );
        let parsed: DeliveryPolicy = toml::from_str(
            "allowed_kinds = [\"ethernet\", \"cellular\"]\nallow_metered = true\ndaily_download_bytes = 1_000_000",
        )
        .unwrap();
        assert_eq!(parsed.daily_download_bytes, Some(1_000_000));
        assert!(toml::from_str::<DeliveryPolicy>("allowed_kinds = [\"satellite\"]").is_err());
        assert!(toml::from_str::<DeliveryPolicy>("daily_download_bytes = -1").is_err());
    }
}
