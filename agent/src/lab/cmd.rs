//! `tandem lab up|status|down`: the command-line face of the lab.

use std::io::Write;

use anyhow::Context;

pub use crate::cli::args::{LabArgs, LabCommand};

use super::{Keygen, LabOptions, Layout, Status};

/// Runs a lab subcommand, printing its outcome on standard output.
pub fn run_cli(args: &LabArgs, keygen: &dyn Keygen) -> anyhow::Result<()> {
    let mut opts = LabOptions::from_env();
    // The service runs until killed, so it must not hold standard output's lock.
    if let LabCommand::Service { name, port, data } = &args.command {
        return crate::demo::service::serve(name, *port, data);
    }
    let mut out = std::io::stdout().lock();
    match &args.command {
        // Served above.
        LabCommand::Service { .. } => {}
        LabCommand::Up { json, no_agents } => {
            opts.start_agents = !no_agents;
            let layout = super::up(&opts, keygen)?;
            if *json {
                print_json(&mut out, &layout)?;
            } else {
                write_layout(&mut out, &layout, None).context("cannot write to standard output")?;
            }
        }
        LabCommand::Status { json } => {
            let status = super::status(&opts)?;
            if *json {
                print_json(&mut out, &status)?;
            } else {
                write_layout(&mut out, &status.layout, Some(&status))
                    .context("cannot write to standard output")?;
            }
        }
        LabCommand::Down => {
            let report = super::down(&opts)?;
            let nothing =
                report.stopped.is_empty() && report.namespaces.is_empty() && !report.removed_dir;
            if nothing {
                writeln!(out, "lab {}: nothing to remove", opts.prefix)?;
            } else {
                writeln!(
                    out,
                    "lab {}: stopped {} agent(s), deleted {} namespace(s){}",
                    opts.prefix,
                    report.stopped.len(),
                    report.namespaces.len(),
                    if report.removed_dir {
                        format!(", removed {}", opts.base_dir.display())
                    } else {
                        String::new()
                    }
                )?;
            }
        }
    }
    Ok(())
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).context("cannot write JSON")?;
    writeln!(out).context("cannot write to standard output")
}

/// The layout as text; with a status, also what exists and runs.
fn write_layout(
    out: &mut impl Write,
    layout: &Layout,
    status: Option<&Status>,
) -> std::io::Result<()> {
    writeln!(
        out,
        "lab {} in {}",
        layout.prefix,
        layout.base_dir.display()
    )?;
    let present = |ns: &str| match status {
        Some(s) if s.present.get(ns).copied().unwrap_or(false) => " (present)",
        Some(_) => " (absent)",
        None => "",
    };
    let n = &layout.namespaces;
    let a = &layout.addresses;
    for (role, ns, addr) in [
        ("node1", &n.node1, Some(a.node1)),
        ("node2", &n.node2, Some(a.node2)),
        ("client", &n.client, Some(a.client)),
        ("witness", &n.witness, Some(a.witness)),
        ("bridge", &n.bridge, None),
    ] {
        let addr = addr.map_or_else(String::new, |ip| format!("{ip}/{}", layout.prefix_len));
        writeln!(out, "  {role:<8} {ns:<28} {addr}{}", present(ns))?;
    }
    writeln!(
        out,
        "  vip      {} (moved by the failover engine)",
        layout.vip
    )?;
    for net in &layout.networks {
        let members: Vec<String> = net
            .members
            .iter()
            .map(|m| format!("{}/{}", m.address, net.prefix_len))
            .collect();
        writeln!(
            out,
            "  network {} ({} {}): {}; {}",
            net.name,
            net.bridge,
            net.interface,
            members.join(" "),
            net.carries
        )?;
    }
    for node in &layout.nodes {
        let agent = match (node.agent_pid, status) {
            (Some(pid), Some(s)) if s.agents_alive.get(&node.name).copied().unwrap_or(false) => {
                format!("agent pid {pid} running")
            }
            (Some(pid), Some(_)) => format!("agent pid {pid} not running"),
            (Some(pid), None) => format!("agent pid {pid}"),
            (None, _) => "agent not started".to_owned(),
        };
        writeln!(out, "  {}: {agent}", node.name)?;
        writeln!(out, "    replication    {}", node.listen)?;
        writeln!(out, "    config         {}", node.config.display())?;
        writeln!(out, "    data_dir       {}", node.data_dir.display())?;
        writeln!(out, "    state_dir      {}", node.state_dir.display())?;
        writeln!(out, "    control_socket {}", node.control_socket.display())?;
        writeln!(out, "    log            {}", node.log.display())?;
    }
    Ok(())
}
