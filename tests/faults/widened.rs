//! The schedules of the world's options (issue 24, part C): the rules' sign-out, resent
//! invitations and caller budgets; pacing at real rates (per instance, and the shared bucket
//! over the fake bucket store) with throttles that cut the rate; `DRY_RUN`; a pool in another
//! account. The same invariants as every other schedule, and those the options add.

use crate::check_schedules;
use crate::schedule::Mix;

#[test]
fn invariants_hold_under_faults_with_sign_out_invitations_and_budgets() {
    check_schedules("helpdesk", Mix::Helpdesk, 550);
}

#[test]
fn invariants_hold_under_faults_with_pacing_at_real_rates() {
    check_schedules("paced", Mix::Paced, 400);
}

#[test]
fn invariants_hold_under_faults_in_dry_run() {
    check_schedules("dry-run", Mix::DryRun, 250);
}

#[test]
fn every_fault_kind_at_every_port_call_keeps_the_invariants() {
    check_schedules("fault-matrix", Mix::Faults, 1300);
}

#[test]
fn invariants_hold_under_faults_with_approvals() {
    check_schedules("approvals", Mix::Approvals, 500);
}
