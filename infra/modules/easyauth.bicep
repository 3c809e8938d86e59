// App Service Authentication (Easy Auth) with Microsoft Entra ID in front of the function app,
// for RELAY_AUTH=entra (CONTRACT section 4). The platform validates each caller's access token
// (issuer, signature, lifetime, audience), answers 401 itself to a call without a valid one, and
// hands the app the principal in X-MS-CLIENT-PRINCIPAL; the relay then checks the app roles.
// The health probe, the connector definition and the console's files stay anonymous
// (excludedPaths: every path relay/http/access.py ANONYMOUS_PATHS lets through, the console as
// `/api/console/*`, the form App Service documents, so a file the console adds is covered too).
// Signing in to the console (a browser at /.auth/login/aad) uses the implicit flow, since no
// client secret is configured: the app registration needs the web redirect URI
// https://<host>/.auth/login/aad/callback and ID-token issuance (docs/entra.md, step 3). The app registration itself is made beforehand: see
// infra/entra/ and the README, "Microsoft Entra ID access".

@description('Name of the function app to put Easy Auth in front of.')
param functionAppName string

@description('Application (client) id of the relay\'s app registration.')
@minLength(36)
param clientId string

@description('Application ID URI of the relay\'s app registration (e.g. api://<client id>), an audience its tokens carry.')
@minLength(1)
param audience string

@description('Directory (tenant) id that issues the tokens.')
param tenantId string = tenant().tenantId

@description('Paths answered without a token: the health probe, the connector definition, the full API document, the console (its page, with or without a trailing slash, and every file under it) and the smoke check\'s hook (it answers only to its run\'s signature).')
param excludedPaths array = [
  '/api/health'
  '/api/openapi.json'
  '/api/openapi/full.json'
  '/api/console'
  '/api/console/'
  '/api/console/*'
  '/api/smoke/hook/*'
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
      runtimeVersion: '~1'
    }
    globalValidation: {
      requireAuthentication: true
      // An API, not a web site: no redirect to a sign-in page, a 401 the connector understands.
      unauthenticatedClientAction: 'Return401'
      excludedPaths: excludedPaths
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          // v2 issuer: the app registration asks for v2 access tokens (infra/entra/api.json).
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
          clientId: clientId
        }
        validation: {
          // v2 access tokens carry the client id as `aud`; v1 ones (a connector asking for the
          // resource) the Application ID URI. Both are this app.
          allowedAudiences: union([
            audience
          ], [
            clientId
          ])
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

// No output reads authSettings: the Bicep types mark the properties of the sites/config
// authsettingsV2 resource unreadable (listed, never returned by a GET), so a template that reads
// them is refused.
