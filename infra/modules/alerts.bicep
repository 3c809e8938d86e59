// Alerts an operator must hear about, on the Application Insights component the app reports to:
// - function failures: any failed execution (an HTTP call answered 5xx, a queue execution that
//   threw), from the component's requests/failed metric;
// - poison-queue growth: the Functions host logs a warning each time it moves a message that failed
//   maxDequeueCount times to `<queue>-poison` (a log search alert over those traces);
// - availability: a standard availability test calls /api/health (anonymous) from five regions
//   every five minutes, and the alert fires when two or more of them fail.
// With alertEmail an action group mails that address; without one the alerts show in the portal.

@description('Name prefix of the alert resources.')
param prefix string

@description('Azure region of the availability test and the log alert.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Name of the Application Insights component.')
param appInsightsName string

@description('URL of the health probe, https://<host>/api/health.')
param healthUrl string

@description('E-mail address to notify; empty for none.')
param alertEmail string = ''

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${prefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'relay'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var actions = empty(alertEmail) ? [] : [
  {
    actionGroupId: actionGroup.id
  }
]

resource functionFailures 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${prefix}-function-failures'
  location: 'global'
  tags: tags
  properties: {
    description: 'Function executions failed (HTTP 5xx or a queue execution that threw) in the last 15 minutes.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'failed-executions'
          criterionType: 'StaticThresholdCriterion'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 5
          timeAggregation: 'Count'
        }
      ]
    }
    actions: actions
  }
}

resource poisonGrowth 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'alert-${prefix}-poison-queue'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    description: 'The host moved messages to a -poison queue (relay-fanout-poison, relay-deliveries-poison, relay-replays-poison): work that failed five executions.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'traces | where message has "Moving message to queue" and message has "-poison"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: empty(alertEmail) ? [] : [
        actionGroup.id
      ]
    }
  }
}

// Standard availability test; the hidden-link tag ties it to the component.
resource healthTest 'Microsoft.Insights/webtests@2022-06-15' = {
  name: 'webtest-${prefix}-health'
  location: location
  tags: union(tags, {
    'hidden-link:${appInsights.id}': 'Resource'
  })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: 'webtest-${prefix}-health'
    Name: 'relay /api/health'
    Enabled: true
    Frequency: 300
    Timeout: 30
    Kind: 'standard'
    RetryEnabled: true
    Locations: [
      {
        Id: 'us-va-ash-azr'
      }
      {
        Id: 'us-ca-sjc-azr'
      }
      {
        Id: 'emea-nl-ams-azr'
      }
      {
        Id: 'emea-gb-db3-azr'
      }
      {
        Id: 'apac-sg-sin-azr'
      }
    ]
    Request: {
      RequestUrl: healthUrl
      HttpVerb: 'GET'
      ParseDependentRequests: false
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 7
    }
  }
}

resource healthAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-${prefix}-health'
  location: 'global'
  tags: tags
  properties: {
    description: '/api/health failed from two or more test locations.'
    severity: 1
    enabled: true
    scopes: [
      healthTest.id
      appInsights.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: healthTest.id
      componentId: appInsights.id
      failedLocationCount: 2
    }
    actions: actions
  }
}

@description('Names of the alert rules.')
output alertNames array = [
  functionFailures.name
  poisonGrowth.name
  healthAlert.name
]
