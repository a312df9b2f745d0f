package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
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
	err := c.callJSON(ctx, http.MethodPost, PathUpdatePull, req, &res)
	return res, err
}

// SetRegistryAuth stores one registry's credentials on the appliance for
// its pulls, or removes them when Username and Password are empty.
func (c *Client) SetRegistryAuth(ctx context.Context, auth RegistryAuth) error {
	if err := auth.Validate(); err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	return c.callJSON(ctx, http.MethodPut, PathRegistryAuth, auth, nil)
}

// callJSON sends in as the JSON body of a request and decodes a JSON reply
// into out (when out is not nil).
func (c *Client) callJSON(ctx context.Context, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("mgmt: %s %s: %w", method, path, err)
	}
	req, err := c.newRequest(ctx, method, path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ContentTypeJSON)
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeReply(resp, method, path, out)
}
