package hub

import (
	"net/http"

	"github.com/meshfed/meshfed/hub/ui"
)

// uiAssets serves the UI's pages: package hub/ui's embedded assets.
func uiAssets() http.Handler { return ui.Handler() }
