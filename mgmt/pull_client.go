package mgmt

import (
	"context"
	"fmt"
	"net/http"
)

// Pull asks the appliance to pull, verify and install the release req
// names. It returns once the release is committed as the trial slot; the
// appliance then reboots into it by itself. The call lasts as long as the
// download: give ctx a deadline that allows for it.
func (c *Client) Pull(ctx context.Context, req PullRequest) (PullResult, error) {
	var res PullResult
	if err := req.Validate(); err != nil {
		return res, fmt.Errorf("mgmt: %w", err)
	}
	err := c.call(ctx, http.MethodPost, PathUpdatePull, req, &res)
	return res, err
}

// SetRegistryAuth stores one registry's credentials on the appliance for
// its pulls, or removes them when Username and Password are empty.
func (c *Client) SetRegistryAuth(ctx context.Context, auth RegistryAuth) error {
	if err := auth.Validate(); err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	return c.call(ctx, http.MethodPut, PathRegistryAuth, auth, nil)
}
