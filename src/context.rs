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
        let layout = Layout::new(config.deploy_to.clone());
        Ctx { config, layout, ui }
    }
}
