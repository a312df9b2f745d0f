package rpiboot

import "testing"

func TestIsWiFiFirmware(t *testing.T) {
	for rel, want := range map[string]bool{
		"brcm/brcmfmac43430-sdio.bin":                               true,
		"brcm/brcmfmac43430-sdio.raspberrypi,model-zero-2-w.txt":    true,
		"brcm/brcmfmac43455-sdio.raspberrypi,4-model-b.txt":         true,
		"brcm/brcmfmac43455-sdio.Raspberry Pi Foundation-Raspberry": true,
		"cypress/cyfmac43455-sdio.clm_blob":                         true,
		"brcm/brcmfmac43430a0-sdio.bin":                             false, // another chip revision, no Pi has it
		"brcm/brcmfmac4356-pcie.bin":                                false,
		"cypress/cyfmac4373-sdio.bin":                               false,
		"brcm43430-sdio.bin":                                        false,
		"other/brcm/brcmfmac43430-sdio.bin":                         false,
	} {
		if got := IsWiFiFirmware(rel); got != want {
			t.Errorf("IsWiFiFirmware(%q) = %v, want %v", rel, got, want)
		}
	}
}
