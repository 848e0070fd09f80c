//! The network gate in front of every remote call, decided without IO: remote tiers are off
//! unless the operator opted in, and only used while the device's route to the internet is on
//! an approved interface, of an approved kind, and (optionally) not metered. `crate::netstate`
//! reads the route and the interface from procfs/sysfs into a [`NetState`]; [`check`] judges it.
//! A refusal carries a short reason name; the router reports the fallback with reason `policy`.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `[network]` section as written in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicy {
    /// Nothing leaves the device unless this is `true` (default `false`).
    pub opt_in: bool,
    /// Interface names the default route may use; empty means any.
    pub allowed_interfaces: Vec<String>,
    /// Interface kinds the default route may use (default: ethernet, wifi, cellular).
    pub allowed_kinds: Vec<InterfaceKind>,
    /// Refuse remote calls while the default route is metered (default `false`).
    pub deny_metered: bool,
    /// Interfaces to treat as metered, besides every cellular one (Linux has no metered flag).
    pub metered_interfaces: Vec<String>,
    /// Where sysfs is mounted (tests point it elsewhere).
    pub sys_root: PathBuf,
    /// Where procfs is mounted (tests point it elsewhere).
    pub proc_root: PathBuf,
}

/// What the device's network looks like right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetState {
    /// The interface carrying the default route; `None` when there is no default route.
    pub default_route: Option<Interface>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub kind: InterfaceKind,
    pub up: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceKind {
    Ethernet,
    Wifi,
    Cellular,
    /// Anything else: VPN tunnels (tun, WireGuard), bridges without a known lower link, ...
    Other,
}

/// Why a remote call is refused. [`Refusal::reason`] is the stable name for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("remote tiers are off: set network.opt_in = true to allow them")]
    OptIn,
    #[error("offline: no default route, or its interface is down")]
    Offline,
    #[error(
        "the default route is on {name}, a {kind} interface, and network.allowed_kinds does not include {kind}"
    )]
    NetworkKind { name: String, kind: InterfaceKind },
    #[error("the default route is on {name}, which is not in network.allowed_interfaces")]
    Interface { name: String },
    #[error("the default route is on {name}, which is metered, and network.deny_metered is set")]
    Metered { name: String },
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy {
            opt_in: false,
            allowed_interfaces: Vec::new(),
            allowed_kinds: vec![
                InterfaceKind::Ethernet,
                InterfaceKind::Wifi,
                InterfaceKind::Cellular,
            ],
            deny_metered: false,
            metered_interfaces: Vec::new(),
            sys_root: PathBuf::from("/sys"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

impl InterfaceKind {
    pub fn name(self) -> &'static str {
        match self {
            InterfaceKind::Ethernet => "ethernet",
            InterfaceKind::Wifi => "wifi",
            InterfaceKind::Cellular => "cellular",
            InterfaceKind::Other => "other",
        }
    }
}

impl fmt::Display for InterfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Refusal {
    /// `"opt_in"`, `"offline"`, `"network_kind"`, `"interface"` or `"metered"`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::OptIn => "opt_in",
            Refusal::Offline => "offline",
            Refusal::NetworkKind { .. } => "network_kind",
            Refusal::Interface { .. } => "interface",
            Refusal::Metered { .. } => "metered",
        }
    }
}

impl NetworkPolicy {
    /// Whether `interface` counts as metered: every cellular link, and the configured names.
    pub fn is_metered(&self, interface: &Interface) -> bool {
        interface.kind == InterfaceKind::Cellular
            || self.metered_interfaces.contains(&interface.name)
    }
}

/// The full gate for a remote call: opt-in first, then [`check_network`].
pub fn check(policy: &NetworkPolicy, state: &NetState) -> Result<(), Refusal> {
    if !policy.opt_in {
        return Err(Refusal::OptIn);
    }
    check_network(policy, state)
}

/// The network gates alone (offline, interface, kind, metered), in that order, for a caller that
/// has its own answer to opt-in.
pub fn check_network(policy: &NetworkPolicy, state: &NetState) -> Result<(), Refusal> {
    let Some(interface) = state.default_route.as_ref().filter(|i| i.up) else {
        return Err(Refusal::Offline);
    };
    if !policy.allowed_interfaces.is_empty() && !policy.allowed_interfaces.contains(&interface.name)
    {
        return Err(Refusal::Interface {
            name: interface.name.clone(),
        });
    }
    if !policy.allowed_kinds.contains(&interface.kind) {
        return Err(Refusal::NetworkKind {
            name: interface.name.clone(),
            kind: interface.kind,
        });
    }
    if policy.deny_metered && policy.is_metered(interface) {
        return Err(Refusal::Metered {
            name: interface.name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(name: &str, kind: InterfaceKind, up: bool) -> NetState {
        NetState {
            default_route: Some(Interface {
                name: name.to_string(),
                kind,
                up,
            }),
        }
    }

    #[test]
    fn check_table() {
        use InterfaceKind::*;
        let open = NetworkPolicy {
            opt_in: true,
            ..NetworkPolicy::default()
        };
        let strict = NetworkPolicy {
            opt_in: true,
            allowed_interfaces: vec!["eth0".into(), "wlan0".into(), "usb0".into()],
            allowed_kinds: vec![Ethernet, Wifi],
            deny_metered: true,
            metered_interfaces: vec!["usb0".into()],
            ..NetworkPolicy::default()
        };
        let off = NetworkPolicy::default();
        let strict_any_name = NetworkPolicy {
            allowed_interfaces: vec![],
            ..strict.clone()
        };
        let no_metered = NetworkPolicy {
            deny_metered: true,
            ..open.clone()
        };
        let cases: Vec<(&str, &NetworkPolicy, NetState, Option<&str>)> = vec![
            (
                "default is off",
                &off,
                on("eth0", Ethernet, true),
                Some("opt_in"),
            ),
            (
                "opted in, ethernet",
                &open,
                on("eth0", Ethernet, true),
                None,
            ),
            (
                "opted in, cellular allowed by default",
                &open,
                on("wwan0", Cellular, true),
                None,
            ),
            (
                "vpn is other",
                &open,
                on("wg0", Other, true),
                Some("network_kind"),
            ),
            (
                "no default route",
                &open,
                NetState::default(),
                Some("offline"),
            ),
            (
                "route interface down",
                &open,
                on("eth0", Ethernet, false),
                Some("offline"),
            ),
            (
                "opt-in is checked first",
                &off,
                NetState::default(),
                Some("opt_in"),
            ),
            (
                "cellular is metered",
                &no_metered,
                on("wwan0", Cellular, true),
                Some("metered"),
            ),
            (
                "wifi is not metered",
                &no_metered,
                on("wlan0", Wifi, true),
                None,
            ),
            (
                "strict: ethernet",
                &strict,
                on("eth0", Ethernet, true),
                None,
            ),
            (
                "strict: unknown name",
                &strict,
                on("eth1", Ethernet, true),
                Some("interface"),
            ),
            (
                "strict: named metered",
                &strict,
                on("usb0", Ethernet, true),
                Some("metered"),
            ),
            (
                "strict: kind",
                &strict_any_name,
                on("ppp0", Cellular, true),
                Some("network_kind"),
            ),
        ];
        for (name, policy, state, expected) in cases {
            let got = check(policy, &state).err();
            assert_eq!(
                got.as_ref().map(Refusal::reason),
                expected,
                "{name}: {got:?}"
            );
        }
    }

    #[test]
    fn check_network_ignores_opt_in() {
        let policy = NetworkPolicy::default();
        assert_eq!(
            check_network(&policy, &on("eth0", InterfaceKind::Ethernet, true)),
            Ok(())
        );
    }

    #[test]
    fn config_defaults_and_strictness() {
        let policy: NetworkPolicy = serde_json::from_str("{}").expect("defaults");
        assert_eq!(policy, NetworkPolicy::default());
        let policy: NetworkPolicy =
            serde_json::from_str(r#"{"opt_in": true, "allowed_kinds": ["wifi", "other"]}"#)
                .expect("kinds");
        assert_eq!(
            policy.allowed_kinds,
            vec![InterfaceKind::Wifi, InterfaceKind::Other]
        );
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"opt_inn": true}"#).is_err());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"allowed_kinds": ["lte"]}"#).is_err());
    }

    #[test]
    fn refusal_messages_name_the_setting() {
        let refusal = Refusal::NetworkKind {
            name: "wg0".into(),
            kind: InterfaceKind::Other,
        };
        assert!(refusal.to_string().contains("allowed_kinds"));
    }
}
