//! What every operation needs: the config, where things live, the reporter.

use crate::config::Config;
use crate::layout::Layout;
use crate::ui::Ui;

pub struct Ctx {
    pub config: Config,
    pub layout: Layout,
    pub ui: Ui,
}

impl Ctx {
    pub fn new(config: Config, ui: Ui) -> Ctx {
        crate::hookenv::init(&config);
        // With [fleet], deploy_to is a path on the hosts; what the
        // controller keeps (its build, mirror, lock, rollout history) lives
        // in fleet.state.
        // current_path is a path on the hosts, too.
        let layout = match &config.fleet {
            Some(fleet) => Layout::new(fleet.state.clone()),
            None => Layout::new(config.deploy_to.clone()).with_current(config.current_path.clone()),
        };
        Ctx { config, layout, ui }
    }
}
