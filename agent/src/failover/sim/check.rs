//! The invariants checked after every step of the simulation (see the parent
//! module), and the description of the world printed when one fails.

use std::{fmt::Write as _, time::Duration};

use super::world::{BOUND, GRACE, HEAL_STEP, STEP, World};
use crate::failover::{Preference, State};

impl World {
    pub(super) fn check(&mut self) {
        if !self.links[0] {
            self.vip_net_cut = Some(self.now);
        }
        // A live agent that hears neither its peer nor its witness must have fenced
        // itself by now.
        for i in 0..2 {
            let n = &self.nodes[i];
            let isolated = n.live()
                && !n.witness
                && n.engine
                    .as_ref()
                    .is_some_and(|e| !e.peer_connected(self.now));
            if !isolated {
                self.nodes[i].isolated_since = None;
                continue;
            }
            let since = *self.nodes[i].isolated_since.get_or_insert(self.now);
            let n = &self.nodes[i];
            // A runner fences at once; leftovers of a previous agent go within a
            // heartbeat timeout of the start (the witness may not be measured yet).
            let late = match n.state() {
                Some(State::Alone | State::Prim) => self.now > since + STEP,
                _ => self.now > since + Duration::from_millis(1100),
            };
            if late && (n.app || n.vip) {
                self.fail(format!(
                    "n{i} is isolated but did not fence: {}",
                    self.describe()
                ));
            }
        }
        if self.connected() {
            self.resolvable_since.get_or_insert(self.now);
        } else {
            self.resolvable_since = None;
        }
        let cut = self.vip_net_cut.is_some_and(|t| self.now <= t + GRACE);
        // Two runners that arose in that window are resolved by heartbeats, so only
        // once both agents run and hear each other: an agent frozen or dead meanwhile
        // (its application and VIP stay, see the fault model) resolves nothing, and
        // the grace runs from when both are back.
        let lingering =
            self.dual_excused && self.resolvable_since.is_none_or(|t| self.now <= t + GRACE);
        let [a, b] = &self.nodes;
        if (a.app && b.app) || (a.vip && b.vip) {
            if cut || lingering {
                self.dual_excused = true;
                self.stats.dual_excused_steps += 1;
                if !cut {
                    self.stats.dual_lingering_steps += 1;
                }
            } else {
                self.fail(format!(
                    "two nodes run the application or hold the VIP: {}",
                    self.describe()
                ));
            }
        } else {
            self.dual_excused = false;
        }
        if self.step < HEAL_STEP {
            return;
        }
        // An administrator's swap asked for before the heal may still be under
        // way: it moves the application on purpose, so the pair is settled once it
        // ends (or is abandoned). And a cut that lasted until the heal still times
        // the peer out (a heartbeat timeout after the last one heard): settled once
        // each node heard one sent after the heal.
        let heal_clock = self.heal_clock;
        let settled = self.nodes.iter().all(|n| {
            n.live()
                && n.aware > heal_clock
                && n.admin_start_at.is_none()
                && n.restart_at.is_none()
                && n.engine.as_ref().is_some_and(|e| !e.swapping())
        });
        if self.healed_at.is_none() && settled {
            self.healed_at = Some(self.now);
        }
        let Some(healed) = self.healed_at else { return };
        if self.converged() {
            self.converged_at.get_or_insert(self.now);
        } else if self.converged_at.is_some() {
            self.fail(format!("left the converged state: {}", self.describe()));
        } else if self.now > healed + BOUND {
            self.fail(format!(
                "no convergence {BOUND:?} after healing: {}",
                self.describe()
            ));
        }
    }

    /// PRIM + SECOND, identical data and generations, the SECOND in sync, the
    /// application and the VIP on the PRIM only, the preferred node primary.
    pub(super) fn converged(&self) -> bool {
        let [a, b] = &self.nodes;
        let p = match (a.state(), b.state()) {
            (Some(State::Prim), Some(State::Second)) => 0,
            (Some(State::Second), Some(State::Prim)) => 1,
            _ => return false,
        };
        let (prim, second) = (&self.nodes[p], &self.nodes[1 - p]);
        let preferred_ok = self.params[0].preference != Preference::ThisNode || p == 0;
        prim.app
            && prim.vip
            && !second.app
            && !second.vip
            && prim.log.same(&second.log)
            && prim.gens == second.gens
            && second.in_sync
            && preferred_ok
    }

    pub(super) fn describe(&self) -> String {
        let mut s = format!("links {:?};", self.links);
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = write!(
                s,
                " n{i}: {:?} reason {:?} app {} vip {} role {:?} in_sync {} writes {} gen {:x} \
                 witness {} checker_failing {} node_check_failing {} frozen {} diverged {:?} \
                 memory {:?} peer {:?} connected {:?};",
                n.state(),
                n.engine.as_ref().map(|e| e.reason().to_string()),
                n.app,
                n.vip,
                n.role,
                n.in_sync,
                n.log.ids.len(),
                n.gens.current,
                n.witness,
                n.checker_failing,
                n.node_check_failing,
                n.frozen_until.is_some(),
                n.engine.as_ref().map(|e| e.diverged()),
                n.memory,
                n.engine.as_ref().map(|e| e.peer_state()),
                n.engine.as_ref().map(|e| e.peer_connected(self.now)),
            );
        }
        s
    }
}
