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
        // With [fleet], deploy_to is a path on the hosts; what the
        // controller keeps (its build, mirror, lock, rollout history) lives
        // in fleet.state.
        let root = match &config.fleet {
            Some(fleet) => fleet.state.clone(),
            None => config.deploy_to.clone(),
        };
        let layout = Layout::new(root);
        Ctx { config, layout, ui }
    }
}
