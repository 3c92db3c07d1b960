-- CodeCompanion.nvim: Pactum as an ACP adapter, then chosen as the chat adapter.
require("codecompanion").setup({
  adapters = {
    acp = {
      pactum = function()
        return require("codecompanion.adapters").extend("gemini_cli", {
          name = "pactum",
          formatted_name = "Pactum",
          commands = {
            default = { "/ABSOLUTE/PATH/TO/pactum", "acp" },
          },
          -- Pactum needs no authentication.
          defaults = { auth_method = nil, mcpServers = {} },
          env = {},
        })
      end,
    },
  },
  strategies = {
    chat = { adapter = "pactum" },
  },
})
